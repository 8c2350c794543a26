"""Zero-shot CLIP: cosine similarity between the image and ensembled class-prompt embeddings.

Nothing trains. The prompts (templates x synonyms) are recorded in ``text_prompts``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Classifier, TextOptions, TrainDefaults, attach_frozen_image_tower, image_embedding
from .text import zero_shot_classifier

DEFAULTS = TrainDefaults(epochs=0, lr=1.0)


@dataclass
class Options(TextOptions):
    pass


class ZeroShot(Classifier):
    trainable_patterns = ()  # what it trains (the contract test holds it to this)

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        model = clip.model
        attach_frozen_image_tower(self, clip)
        self.text_prompts, text = zero_shot_classifier(clip, num_classes, opts)
        self.register_buffer("text_embeddings", text)
        self.register_buffer("logit_scale", model.logit_scale.detach().exp().clone())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        img = image_embedding(self, pixel_values)
        return self.logit_scale * F.normalize(img.float(), dim=-1) @ self.text_embeddings.T

    def describe(self) -> str:
        return "nothing: CLIP's image-text similarity against ensembled class prompts"


def build(clip, num_classes: int, opts: Options) -> ZeroShot:
    return ZeroShot(clip, num_classes, opts)
