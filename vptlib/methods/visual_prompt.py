"""VPT-shallow and VPT-deep: trainable prompt tokens in a frozen encoder plus a linear head.

The encoder is :class:`vptlib.vpt.PromptedVisionEncoder`; the head sits on its post-LN
CLS feature with VPT's official initialisation. Trainable parameters with ``C``
classes and width ``D``: shallow ``P*D + D*C + C``; deep ``L*P*D + D*C + C``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..vpt import PromptedVisionEncoder
from .base import Classifier, TrainDefaults, linear_head
from .linear import _vision

DEFAULTS = TrainDefaults(epochs=50, lr=0.05, optimizer="sgd", weight_decay=1e-4)


@dataclass
class Options:
    prompt_tokens: int = 5  # P, official default
    prompt_dropout: float = 0.0  # official default


class VPTClassifier(Classifier):
    def __init__(self, vision, num_classes: int, opts: Options, deep: bool):
        super().__init__()
        self.method = "vpt_deep" if deep else "vpt_shallow"
        self.encoder = PromptedVisionEncoder(copy.deepcopy(vision), opts.prompt_tokens, deep, opts.prompt_dropout)
        self.head = linear_head(vision.config.hidden_size, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(pixel_values).float())

    def describe(self) -> str:
        where = "before every layer (deep)" if self.encoder.deep else "at the input (shallow)"
        return f"{self.encoder.num_tokens} prompt tokens {where} and a linear head"


# Prompts at most 4x the image's own tokens (200 for ViT-B/32's 49 patches + CLS; VPT's
# paper goes to 200 on ViT-B/16's 196 patches): attention cost grows with the square of
# the sequence, and 100,000 prompts would run for hours without finishing an epoch.
MAX_PROMPT_RATIO = 4


def max_prompt_tokens(vision) -> int:
    cfg = vision.config
    return MAX_PROMPT_RATIO * ((cfg.image_size // cfg.patch_size) ** 2 + 1)


def _check(opts: Options, vision) -> None:
    limit = max_prompt_tokens(vision)
    if not 0 <= opts.prompt_tokens <= limit:
        raise ValueError(f"prompt_tokens must be in [0, {limit}] (4x this model's sequence length), "
                         f"got {opts.prompt_tokens}")  # fmt: skip
    if not 0 <= opts.prompt_dropout < 1:
        raise ValueError(f"prompt_dropout must be in [0, 1), got {opts.prompt_dropout}")


def build_shallow(clip, num_classes: int, opts: Options) -> VPTClassifier:
    _check(opts, _vision(clip))
    return VPTClassifier(_vision(clip), num_classes, opts, deep=False)


def build_deep(clip, num_classes: int, opts: Options) -> VPTClassifier:
    _check(opts, _vision(clip))
    return VPTClassifier(_vision(clip), num_classes, opts, deep=True)
