"""ProLIP: fine-tune only CLIP's visual projection, kept near where it started (Fahes et al.
2025; astra-vision/ProLIP ``methods/ProLIP.py``).

On the frozen pre-projection image features ``x`` (the post-LN CLS token, ``pooler_output``,
768 wide on ViT-B/32) the ``(E, D)`` projection ``W`` is the only trained tensor
(``E * D`` = 512 * 768 = 393,216 parameters on ViT-B/32), started at CLIP's own
(``visual.proj``), and the classes are scored against the frozen zero-shot class embeddings
``T`` (``text_weights``) at CLIP's temperature ``s`` (the code's constant 100):

    logits = s * norm(x @ W.T) @ T.T
    loss   = CE(logits, y) + lambda * ||W - W0||^2        (MSELoss(reduction="sum"))

The validation-free rule is the paper's: ``lambda = 1 / N`` with ``N`` the training images
per class (``lambda_funct_1_N``; the study's classes are balanced, and ``N`` is their mean
count). The rest is the code's ``few_shot_no_val_lr1e-5_lambda_1_N`` config: Adam (``eps``
1e-4, no weight decay) at lr 1e-5 with cosine decay, 300 epochs, each epoch **one** step on
the whole training set (full batch), seen as one of 300 augmented views of every image
(``aug_views``). Nothing is chosen on validation by the recipe.

Where this differs from the paper's code: each epoch draws every image's view at random
from the cached views (the code steps through view 1, 2, ... for all images at once); the
views are the study's augmentation (:class:`~vptlib.data.augment.Augment`), not
``RandomResizedCrop(scale=(0.5, 1))`` with flips; the class embeddings are the study's
prompt ensemble (:mod:`.text`); the optimiser is AdamW with weight decay 0, which is Adam.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier, TextOptions, TrainDefaults, flag
from .text import zero_shot_classifier

# few_shot_no_val_lr1e-5_lambda_1_N.yaml: train_epoch 300, lr_v 1e-5; ProLIP.py:165 Adam, eps 1e-4.
DEFAULTS = TrainDefaults(epochs=300, lr=1e-5, optimizer="adamw", weight_decay=0.0)
ADAM_EPS = 1e-4  # ProLIP.py:165
AUGMENT_VIEWS = 300  # configs/base.yaml: aug_views


@dataclass
class Options(TextOptions):
    views: int = flag(
        AUGMENT_VIEWS,
        "--views",
        f"prolip: cached augmented views of each training image (paper: {AUGMENT_VIEWS})",
        rehearsal=2,
    )


def frobenius_penalty(weight: torch.Tensor, start: torch.Tensor, num_classes: int, train_size: int) -> torch.Tensor:
    """``lambda * ||W - W0||^2`` with ProLIP's validation-free ``lambda = 1 / N`` (N: images per class)."""
    shots = train_size / num_classes
    return (weight - start).pow(2).sum() / shots


class ProjectionHead(nn.Module):
    """CLIP's visual projection, trainable, scored against frozen class embeddings."""

    def __init__(self, projection: torch.Tensor, text: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.in_features = projection.shape[1]
        self.weight = nn.Parameter(projection.clone())  # (E, D), CLIP's visual_projection.weight
        self.register_buffer("start", projection.clone())  # (E, D), the penalty's anchor
        self.register_buffer("text", text)  # (C, E) zero-shot class embeddings, frozen
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.normalize(x @ self.weight.T, dim=-1)  # (B, E)
        return self.scale * f @ self.text.T  # (B, C)


class ProLIP(Classifier):
    trainable_patterns = ("head.weight",)  # what it trains (the contract test holds it to this)
    uses_feature_cache = True
    full_batch = True  # one step an epoch on every training image (ProLIP.py:185-216)

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        model = clip.model
        self.vision = copy.deepcopy(model.vision_model).requires_grad_(False)
        self.text_prompts, text = zero_shot_classifier(clip, num_classes, opts)
        scale = model.logit_scale.detach().exp().clone()
        self.head = ProjectionHead(model.visual_projection.weight.detach().float(), text, scale)
        self.feature_views = opts.views
        self.num_classes = num_classes
        # N, the training images; set from the data before training (fit_features).
        self.register_buffer("train_size", torch.tensor(0), persistent=False)

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values=pixel_values).pooler_output  # (B, D), before the projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).float())

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.head.weight], "lr": lr, "eps": ADAM_EPS}]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), labels)
        if int(self.train_size) == 0:  # before fit_features (a check of the starting loss)
            return ce
        return ce + frobenius_penalty(self.head.weight, self.head.start, self.num_classes, int(self.train_size))

    @torch.no_grad()
    def fit_features(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fix ``lambda = 1 / N`` from the training split, then train (returns None)."""
        self.train_size.fill_(len(splits["train"][1]))
        return None

    def describe(self) -> str:
        return "CLIP's visual projection, kept near its start by a Frobenius penalty (lambda = 1/N)"


def build(clip, num_classes: int, opts: Options) -> ProLIP:
    if opts.views < 1:
        raise ValueError(f"views must be at least 1, got {opts.views}")
    return ProLIP(clip, num_classes, opts)
