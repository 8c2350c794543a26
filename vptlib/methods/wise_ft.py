"""WiSE-FT: weight-space ensembling of zero-shot and fine-tuned CLIP (Wortsman et al. 2022).

Fine-tuning starts from the zero-shot classifier itself, so that the two endpoints
live in one weight space: with ``base="full"`` the image tower and projection train
end to end under a head initialised to the zero-shot class-text embeddings (times
CLIP's temperature); with ``base="flyp"`` both encoders train with FLYP's in-batch
contrastive loss (:mod:`.flyp`), as in the FLYP paper's WiSE-FT results. After training, and after the epoch is chosen
on validation, :meth:`WiseFT.finalize` evaluates ``theta(alpha) = (1 - alpha) *
theta_zero_shot + alpha * theta_fine_tuned`` on the validation split for each alpha
in ``alphas`` and keeps the best one (ties: the smaller alpha, closer to zero-shot).
``alpha = 0`` is zero-shot CLIP and ``alpha = 1`` the fine-tuned model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vptlib.selection import best_index

from . import flyp
from .base import TextOptions, TrainDefaults, Wrapper, flag
from .zero_shot import ZeroShot

DEFAULTS = TrainDefaults(epochs=10, lr=1e-5, optimizer="adamw", weight_decay=0.1, grad_clip=1.0)
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
# The mixing coefficient of a run that chooses nothing on validation (--select last): the
# paper's own fixed choice, the "WiSE-FT (alpha = 0.5)" rows of Wortsman et al. (2022).
FIXED_ALPHA = 0.5


@dataclass
class Options(TextOptions):
    base: str = flag("full", "--base", "wise_ft: full | flyp, what is fine-tuned before mixing (default full)")
    alphas: tuple[float, ...] = ALPHAS  # mixing coefficients tried on validation
    fixed_alpha: float = FIXED_ALPHA  # the coefficient when nothing is chosen on validation (select last)


class ZeroShotHeadCLIP(ZeroShot):
    """Zero-shot CLIP made trainable: image tower, projection, and a linear head that
    starts as the class-text embeddings times CLIP's temperature (same logits at init)."""

    trainable_patterns = (
        "vision.*",
        "visual_projection.*",
        "head.*",
    )  # what it trains (the contract test holds it to this)

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__(clip, num_classes, opts)
        self.vision.requires_grad_(True)
        self.visual_projection.requires_grad_(True)
        self.head = nn.Linear(self.text_embeddings.shape[1], num_classes)
        with torch.no_grad():
            self.head.weight.copy_(self.logit_scale * self.text_embeddings)
            self.head.bias.zero_()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        img = self.visual_projection(self.vision(pixel_values=pixel_values).pooler_output)
        return self.head(F.normalize(img.float(), dim=-1))


class WiseFT(Wrapper):
    """The fine-tuning method it wraps trains as it would alone (every hook is its own);
    WiSE-FT adds only :meth:`finalize`, the mixing."""

    def __init__(self, clip, num_classes: int, opts: Options):
        texts = TextOptions(opts.class_names, opts.templates, opts.synonyms)
        if opts.base == "full":
            super().__init__(ZeroShotHeadCLIP(clip, num_classes, opts))
        else:
            super().__init__(flyp.FLYP(clip, num_classes, flyp.Options(**dataclasses.asdict(texts))))
        self.base, self.alphas, self.fixed_alpha = opts.base, tuple(opts.alphas), opts.fixed_alpha
        # The zero-shot endpoint: a plain dict, so it is neither trained nor checkpointed.
        self._zero_shot = {k: v.detach().clone() for k, v in self.trainable_state().items()}
        self.alpha = 1.0

    @torch.no_grad()
    def mix(self, alpha: float, fine_tuned: dict[str, torch.Tensor]) -> None:
        """Set the weights to ``(1 - alpha) * zero_shot + alpha * fine_tuned``."""
        params = dict(self.named_parameters())
        for name, ft in fine_tuned.items():
            zs = self._zero_shot[name].to(ft.device, ft.dtype)
            params[name].copy_(torch.lerp(zs, ft, alpha))
        self.alpha = alpha

    def finalize(self, score: Callable[[str], tuple[float, float]]) -> dict:
        fine_tuned = {k: v.detach().clone() for k, v in self.trainable_state().items()}
        if "val" not in getattr(score, "splits", ("val",)):  # select="last": the paper's fixed alpha
            self.mix(self.fixed_alpha, fine_tuned)
            return {"wise_ft_alpha": self.fixed_alpha, "selected_by": "fixed alpha (nothing chosen on validation)"}
        curve = []
        may_look = "test" in getattr(score, "splits", ())  # a grid point's record holds no test number
        for alpha in self.alphas:
            self.mix(alpha, fine_tuned)
            val_acc, val_loss = score("val")
            row = {"alpha": alpha, "val_acc": val_acc, "val_loss": val_loss}
            if may_look:
                row["test_acc"] = score("test")[0]
            curve.append(row)
        best = curve[best_index(curve, tiebreak=lambda r: r["alpha"])]  # ties: the smaller alpha
        self.mix(best["alpha"], fine_tuned)
        return {
            "wise_ft_alpha": best["alpha"],
            "selected_by": "validation accuracy over alpha",
            "wise_ft_curve": curve,
            "note": "test_acc per alpha is for plotting only",
        }

    def describe(self) -> str:
        what = "image tower and projection under a zero-shot head" if self.base == "full" else "both encoders (FLYP)"
        return f"the {what}, then mixed with zero-shot weights (alpha chosen on validation)"


def build(clip, num_classes: int, opts: Options) -> WiseFT:
    if opts.base not in ("full", "flyp"):
        raise ValueError(f"base must be full or flyp, got {opts.base!r}")
    if not 0 <= opts.fixed_alpha <= 1:
        raise ValueError(f"fixed_alpha must be in [0, 1], got {opts.fixed_alpha}")
    if not opts.alphas or any(not 0 <= a <= 1 for a in opts.alphas):
        raise ValueError(f"alphas must be numbers in [0, 1], got {opts.alphas}")
    return WiseFT(clip, num_classes, opts)
