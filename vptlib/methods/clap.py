"""CLAP, the class-adaptive linear probe (Silva-Rodríguez et al., CVPR 2024; jusiro/CLAP
``trainers/adapters.py``, ``configs/trainers/SGD_lr1e-1_B256_ep300.yaml``).

A linear probe on CLIP's unit-norm projected image features whose ``(C, D)`` class
prototypes start at the zero-shot class embeddings (the paper's ZS-LP) and are scored
by cosine similarity times CLIP's temperature (``forward_lp``):

    logits = s * norm(f) @ norm(P).T

Trained with cross-entropy plus, for CLAP, a penalty that keeps each prototype near its
zero-shot start, weighted per class (``zero_shot_constraint`` with ``l2``):

    loss = CE + mean_c(lambda_c * ||P_c - T_c||^2)

where ``lambda_c`` is the mean zero-shot probability of class ``c`` on the training
images of class ``c`` (``init_lagrangian_multipliers``), fixed before training.
``constraint="none"`` is ZS-LP alone. Trainable parameters: ``C * D`` (4 * 512 = 2,048
on ViT-B/32). The recipe is the code's: features of 20 augmented views of every
training image (``epochs_aumentation``); an epoch of ``len(train_loader_x)`` batches (N // 256
images' worth, Dassl dropping the last partial batch, or one batch when N < 256) drawn from
the shuffled pool of all N x 20 views (``run_epoch``); SGD at lr 0.1 (momentum 0.9, no weight
decay), cosine decay, 300 epochs, batch 256; prototypes started and anchored at the raw
(unnormalised) mean of the class's prompt embeddings (``_get_base_text_features``); and no
validation: the last epoch is the result (the study's selection on validation applies
when a profile asks for it).

Where this differs from the paper's code: no warm-up epoch (CLAP's config holds lr at
1e-5 for the first epoch); the class prompts are the study's ensemble, not CLAP's
per-dataset template; the augmentation is the study's (:class:`~vptlib.data.augment.Augment`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier, TextOptions, TrainDefaults, attach_frozen_image_tower, flag, image_embedding
from .text import zero_shot_classifier

DEFAULTS = TrainDefaults(epochs=300, lr=0.1, optimizer="sgd", weight_decay=0.0)
# CLAP is validation-free by design: one setting for every task.
AUGMENT_VIEWS = 20  # AdapterMethod.epochs_aumentation
BATCH_SIZE = 256  # SGD_lr1e-1_B256_ep300.yaml (the profiles set the study's batch size)
CONSTRAINTS = ("l2", "none")


@dataclass
class Options(TextOptions):
    constraint: str = flag("l2", "--constraint", "clap: l2 (CLAP, default) | none (ZS-LP: no penalty)")


class PrototypeHead(nn.Module):
    """Cosine-similarity logits against trainable class prototypes."""

    def __init__(self, text: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.in_features = text.shape[1]
        self.prototypes = nn.Parameter(text.clone())  # (C, D), starts at zero-shot
        self.register_buffer("zero_shot", text.clone())  # (C, D), the penalty's anchor
        self.register_buffer("scale", scale)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(f, dim=-1) @ F.normalize(self.prototypes, dim=-1).T


class CLAP(Classifier):
    trainable_patterns = ("head.prototypes",)  # what it trains (the contract test holds it to this)
    uses_feature_cache = True
    feature_views = AUGMENT_VIEWS
    epoch_draws_views = True

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        model = clip.model
        attach_frozen_image_tower(self, clip)
        # CLAP starts and anchors its prototypes at the raw mean text embedding: their norm r
        # sets how far a step moves them against the penalty (logits normalise them anyway).
        self.text_prompts, text = zero_shot_classifier(clip, num_classes, opts, raw=True)
        self.head = PrototypeHead(text, model.logit_scale.detach().exp().clone())
        self.constraint = opts.constraint
        # lambda_c, fitted on the training views before training; 1 until then.
        self.register_buffer("multipliers", torch.ones(num_classes), persistent=False)

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return image_embedding(self, pixel_values)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).float())

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), labels)
        if self.constraint == "none":
            return ce
        gap = (self.head.prototypes - self.head.zero_shot).pow(2).sum(-1)  # (C,)
        return ce + (self.multipliers * gap).mean()

    @torch.no_grad()
    def fit_features(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """``init_lagrangian_multipliers``: lambda_c is the mean zero-shot probability of
        the true class over the training views of class c. Then train (returns None)."""
        views, labels = splits["views"]
        feats, labels = views.flatten(0, 1).float(), labels.repeat(len(views))
        probs = torch.softmax(self.head(feats), -1)  # the head still holds the zero-shot prototypes
        onehot = F.one_hot(labels, probs.shape[1]).float()
        self.multipliers = (probs * onehot).sum(0) / onehot.sum(0).clamp(min=1)
        return None

    def finalize(self, score: Callable[[str], tuple[float, float]]) -> dict:
        return {"clap_constraint": self.constraint, "clap_multipliers": [float(m) for m in self.multipliers]}

    def describe(self) -> str:
        what = "zero-shot-initialised class prototypes" if self.constraint == "none" else "class prototypes"
        tail = "" if self.constraint == "none" else ", kept near zero-shot by a class-adaptive penalty"
        return f"{what} on the frozen image features{tail}"


def build(clip, num_classes: int, opts: Options) -> CLAP:
    if opts.constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got {opts.constraint!r}")
    return CLAP(clip, num_classes, opts)
