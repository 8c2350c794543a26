"""Cross-entropy against the class texts, training both encoders: FLYP's own ablation.

Logits are ``logit_scale * norm(image) @ norm(text_c).T`` against one ensembled
embedding per class (templates x synonyms), recomputed through the training text
encoder every step, with cross-entropy against the labels and the temperature frozen
at its pretrained value. This is the "CE" ablation of FLYP (locuslab/FLYP
``src/models/ce_ablation.py``), which the FLYP paper reports as worse than FLYP
itself; :mod:`.flyp` is the paper's method. One text per class means same-class
images are never pushed apart.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Classifier, TextOptions, TrainDefaults
from .text import ClassTokens, class_embeddings, class_prompts

DEFAULTS = TrainDefaults(epochs=20, lr=1e-5, optimizer="adamw", weight_decay=0.1)


@dataclass
class Options(TextOptions):
    pass


class TextCE(Classifier):
    trainable_patterns = ("clip.*",)  # what it trains (the contract test holds it to this)

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        self.clip = copy.deepcopy(clip.model).requires_grad_(True)
        self.clip.logit_scale.requires_grad_(False)
        self.num_classes = num_classes
        self.text_prompts = class_prompts(opts.class_names, opts.templates, opts.synonyms)
        self.tokens = ClassTokens(clip.tokenizer, self.text_prompts)

    def class_text(self) -> torch.Tensor:
        return class_embeddings(self.clip, self.tokens.batch(), self.tokens.owner, self.num_classes)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.get_image_features(pixel_values=pixel_values).pooler_output.float(), dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip.logit_scale.exp() * self.image_features(pixel_values) @ self.class_text().T

    def describe(self) -> str:
        return "both CLIP encoders and projections (cross-entropy against the class texts, FLYP's ablation)"


def build(clip, num_classes: int, opts: Options) -> TextCE:
    return TextCE(clip, num_classes, opts)
