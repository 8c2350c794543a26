"""GDA, Gaussian discriminant analysis beside zero-shot CLIP (Wang et al., ICLR 2024;
mrflogs/ICLR24 ``main_few_shots.py``).

Closed form, nothing trained. On the unit-norm projected image features of the augmented
training views (``augment_epoch``: 10), each class is a Gaussian with its own mean and one
covariance shared by all classes, and the linear discriminant they imply is added to
zero-shot CLIP's logits:

    logits = s * f @ T.T + alpha * (f @ W + b)
    W = Sigma^-1 mu.T                                 (D, C)
    b_c = log(1 / C) - mu_c Sigma^-1 mu_c.T / 2       (C,)

``T`` is the ``(C, D)`` zero-shot class embeddings and ``s`` CLIP's temperature (100 in the
code, OpenAI's exp(logit_scale)). The precision matrix is the code's shrinkage estimate
(``run``, lines 56-60), on the ``M`` views' class-centred features ``z``:

    Sigma^-1 = D * pinv(z.T z + tr(cov(z)) * I)

(``(M - 1) * cov`` is the scatter ``z.T z``, since the class-centred features have mean 0).
``alpha`` is the first best on validation accuracy over the code's grid
(:data:`ALPHAS`, strictly better replaces), starting from the code's 0.1; under the
validation-free protocol nothing is chosen and 0.1 stays.

Where this differs from the paper's code: the views are the study's augmentation
(:class:`~vptlib.data.augment.Augment`) drawn from the feature cache's fixed seeds, not
``RandomResizedCrop(scale=(0.5, 1))`` with flips drawn per seed, so GDA is deterministic here
and runs once; the class embeddings are the study's prompt ensemble (:mod:`.text`); a class
absent from training (a few-shot subset can lose none, but a hand-made split can) is never
predicted rather than a NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier, TextOptions, TrainDefaults, attach_frozen_image_tower, image_embedding
from .text import zero_shot_classifier

DEFAULTS = TrainDefaults(epochs=0, lr=1.0)  # closed form: nothing is optimised
AUGMENT_VIEWS = 10  # configs/*/*.yaml: augment_epoch
ALPHAS = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # main_few_shots.py:70
START_ALPHA = 0.1  # main_few_shots.py:69, kept when nothing on validation beats it
ABSENT = -1e4  # the bias of a class with no training image: never predicted


@dataclass
class Options(TextOptions):
    pass


def fit_gaussians(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` of the shared-covariance Gaussian discriminant, as ``run`` fits it.

    ``feats`` ``(M, D)`` are unit-norm features, ``labels`` ``(M,)``; returns ``W`` ``(D, C)``
    and ``b`` ``(C,)`` in float64 arithmetic, cast back to float32."""
    x, dim = feats.double(), feats.shape[1]
    present = torch.bincount(labels, minlength=num_classes) > 0
    mus = torch.zeros(num_classes, dim, dtype=x.dtype, device=x.device)  # (C, D)
    for c in range(num_classes):
        if present[c]:
            mus[c] = x[labels == c].mean(0)
    centred = x - mus[labels]  # (M, D): each view minus its class mean
    cov = centred.T.cov()  # (D, D), divided by M - 1
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)
    precision = dim * torch.linalg.pinv((len(x) - 1) * cov + cov.trace() * eye)  # (D, D)
    w = precision @ mus.T  # (D, C); the code's einsum('nd, dc -> cn', mus, cov_inv), precision symmetric
    prior = torch.full((num_classes,), 1.0 / num_classes, dtype=x.dtype, device=x.device)
    b = prior.log() - torch.einsum("nd,dc,nc->n", mus, precision, mus) / 2  # (C,)
    b = torch.where(present, b, torch.full_like(b, ABSENT))
    return w.float(), b.float()


class GaussianHead(nn.Module):
    """Zero-shot logits plus ``alpha`` times the Gaussian discriminant's, on unit-norm features."""

    def __init__(self, text: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        classes, dim = text.shape
        self.in_features = dim
        self.register_buffer("text", text)  # (C, D) zero-shot class embeddings
        self.register_buffer("scale", scale)  # CLIP's temperature
        self.register_buffer("weight", torch.zeros(dim, classes))  # (D, C) W, once fitted
        self.register_buffer("bias", torch.zeros(classes))  # (C,) b
        self.register_buffer("alpha", torch.tensor(START_ALPHA))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        clip_logits = self.scale * f @ self.text.T  # (B, C)
        gda_logits = f @ self.weight + self.bias  # (B, C)
        return clip_logits + self.alpha * gda_logits


class GDA(Classifier):
    trainable_patterns = ()  # nothing trains: the head is fitted in closed form
    uses_feature_cache = True
    feature_views = AUGMENT_VIEWS
    fitted_buffers = ("head.weight", "head.bias", "head.alpha")

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        attach_frozen_image_tower(self, clip)
        self.text_prompts, text = zero_shot_classifier(clip, num_classes, opts)
        self.head = GaussianHead(text, clip.model.logit_scale.detach().exp().clone())

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(image_embedding(self, pixel_values).float(), dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))

    @torch.no_grad()
    def fit_features(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Fit the Gaussians on every training view, then choose ``alpha`` on validation."""
        views, labels = splits["views"]  # (V, N, D)
        feats, labels = views.flatten(0, 1).float(), labels.repeat(len(views))
        w, b = fit_gaussians(feats, labels, self.head.text.shape[0])
        self.head.weight.copy_(w.to(self.head.weight))
        self.head.bias.copy_(b.to(self.head.bias))
        curve, best_alpha = [], START_ALPHA
        if "val" in splits and len(splits["val"][1]):
            x, y = splits["val"]
            best_acc = 0.0
            for alpha in ALPHAS:
                self.head.alpha.fill_(alpha)
                acc = float((self.head(x.float()).argmax(1) == y).float().mean())
                curve.append({"alpha": alpha, "val_acc": acc})
                if acc > best_acc:  # strictly better: the first best stays, as in the code
                    best_acc, best_alpha = acc, alpha
        self.head.alpha.fill_(best_alpha)
        return {
            "gda_alpha": best_alpha,
            "gda_alpha_curve": curve,
            "gda_views": int(len(views)),
            "selected_by": "validation accuracy over alpha, the first best (GDA's main_few_shots.py)"
            if curve
            else f"the code's starting alpha {START_ALPHA:g} (nothing chosen on validation)",
        }

    def describe(self) -> str:
        return "nothing: a Gaussian discriminant fitted in closed form on augmented training features, beside zero-shot CLIP"


def build(clip, num_classes: int, opts: Options) -> GDA:
    return GDA(clip, num_classes, opts)
