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

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import flyp
from .base import Classifier, TrainDefaults, flag
from .zero_shot import ZeroShot

DEFAULTS = TrainDefaults(epochs=10, lr=1e-5, optimizer="adamw", weight_decay=0.1)
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass
class Options:
    base: str = flag("full", "--base", "wise_ft: full | flyp, what is fine-tuned before mixing (default full)")
    alphas: tuple[float, ...] = ALPHAS  # mixing coefficients tried on validation
    class_names: tuple[str, ...] | None = None
    templates: tuple[str, ...] | None = None
    synonyms: dict | None = None


class ZeroShotHeadCLIP(ZeroShot):
    """Zero-shot CLIP made trainable: image tower, projection, and a linear head that
    starts as the class-text embeddings times CLIP's temperature (same logits at init)."""

    method = "wise_ft"

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


class WiseFT(Classifier):
    method = "wise_ft"

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        if opts.base == "full":
            self.inner = ZeroShotHeadCLIP(clip, num_classes, opts)
        else:
            self.inner = flyp.FLYP(clip, num_classes, flyp.Options(opts.class_names, opts.templates, opts.synonyms))
        self.batch_loss_is_global = getattr(self.inner, "batch_loss_is_global", False)
        self.text_prompts = self.inner.text_prompts
        self.base, self.alphas = opts.base, tuple(opts.alphas)
        # The zero-shot endpoint: a plain dict, so it is neither trained nor checkpointed.
        self._zero_shot = {k: v.detach().clone() for k, v in self.trainable_state().items()}
        self.alpha = 1.0

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.inner(pixel_values)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.inner.loss(logits, labels)

    def on_epoch_start(self, epoch: int) -> None:
        self.inner.on_epoch_start(epoch)

    def on_step_end(self) -> None:
        self.inner.on_step_end()

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
        curve = []
        for alpha in self.alphas:
            self.mix(alpha, fine_tuned)
            val_acc, val_loss = score("val")
            test_acc, _ = score("test")
            curve.append({"alpha": alpha, "val_acc": val_acc, "val_loss": val_loss, "test_acc": test_acc})
        best = max(curve, key=lambda r: (r["val_acc"], -r["val_loss"], -r["alpha"]))
        self.mix(best["alpha"], fine_tuned)
        return {"wise_ft_alpha": best["alpha"], "selected_by": "validation accuracy over alpha",
                "wise_ft_curve": curve, "note": "test_acc per alpha is for plotting only"}  # fmt: skip

    def describe(self) -> str:
        what = "image tower and projection under a zero-shot head" if self.base == "full" else "both encoders (FLYP)"
        return f"the {what}, then mixed with zero-shot weights (alpha chosen on validation)"


def build(clip, num_classes: int, opts: Options) -> WiseFT:
    if opts.base not in ("full", "flyp"):
        raise ValueError(f"base must be full or flyp, got {opts.base!r}")
    if not opts.alphas or any(not 0 <= a <= 1 for a in opts.alphas):
        raise ValueError(f"alphas must be numbers in [0, 1], got {opts.alphas}")
    return WiseFT(clip, num_classes, opts)
