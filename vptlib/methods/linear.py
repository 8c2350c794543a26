"""Linear probe: a frozen CLIP image encoder and one trainable ``Linear(D, C)`` on its
post-LN CLS feature (``pooler_output``).

Because the features never change, the engine computes them once and trains the head
on the cached features (``uses_feature_cache``). ``through_backbone=True`` instead
runs the frozen backbone on augmented images every step, for comparison.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .base import Classifier, TrainDefaults, vpt_head

DEFAULTS = TrainDefaults(epochs=50, lr=1e-3, optimizer="adamw", weight_decay=1e-4)


@dataclass
class Options:
    through_backbone: bool = False  # train on augmented images through the frozen backbone


class LinearProbe(Classifier):
    method = "linear"

    def __init__(self, vision, num_classes: int, opts: Options):
        super().__init__()
        self.vision = copy.deepcopy(vision).requires_grad_(False)
        self.head = vpt_head(self.vision.config.hidden_size, num_classes)
        self.uses_feature_cache = not opts.through_backbone

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values=pixel_values).pooler_output

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).float())

    def describe(self) -> str:
        return "a linear head on the frozen post-LN CLS feature"


def build(clip, num_classes: int, opts: Options) -> LinearProbe:
    return LinearProbe(_vision(clip), num_classes, opts)


def _vision(clip):
    return clip.vision_model if hasattr(clip, "vision_model") else clip.model.vision_model
