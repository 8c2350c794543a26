"""Full fine-tuning: the whole vision tower and a linear head train.

The backbone's learning rate is ``backbone_lr_scale`` times the head's. With
``lp_ft=k`` the first ``k`` epochs train the head alone (LP-FT, Kumar et al. 2022):
a random head on an unfrozen backbone would otherwise send large, noisy gradients
into the pretrained weights. The head starts at zero for the same reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .base import Classifier, TrainDefaults, flag, linear_head, vision_model

DEFAULTS = TrainDefaults(epochs=20, lr=1e-4, optimizer="adamw", weight_decay=0.05, grad_clip=1.0)


@dataclass
class Options:
    backbone_lr_scale: float = flag(0.1, "--backbone-lr-scale", "full: backbone lr = lr x this (default 0.1)")
    lp_ft: int = flag(0, "--lp-ft", "full: epochs of linear probing (frozen backbone) before fine-tuning (default 0)")


class FullFinetune(Classifier):
    trainable_patterns = ("vision.*", "head.*")  # what it trains (the contract test holds it to this)

    def __init__(self, vision, num_classes: int, opts: Options):
        super().__init__()
        self.vision = copy.deepcopy(vision).requires_grad_(True)
        self.head = linear_head(vision.config.hidden_size, num_classes)
        self.opts = opts
        self.backbone_frozen = opts.lp_ft > 0
        self.unused_params_possible = opts.lp_ft > 0

    def on_epoch_start(self, epoch: int) -> None:
        self.backbone_frozen = epoch < self.opts.lp_ft

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # While probing, no graph is built through the backbone: its grads stay None
        # and the optimizer skips it.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            feats = self.vision(pixel_values=pixel_values).pooler_output
        return self.head(feats.float())

    def param_groups(self, lr: float) -> list[dict]:
        return [
            {"params": list(self.vision.parameters()), "lr": lr * self.opts.backbone_lr_scale},
            {"params": list(self.head.parameters()), "lr": lr},
        ]

    def describe(self) -> str:
        lp = f", after {self.opts.lp_ft} linear-probe epochs" if self.opts.lp_ft else ""
        return f"the whole vision tower (lr x{self.opts.backbone_lr_scale}) and a linear head{lp}"


def build(clip, num_classes: int, opts: Options) -> FullFinetune:
    if opts.backbone_lr_scale <= 0:
        raise ValueError(f"backbone_lr_scale must be > 0, got {opts.backbone_lr_scale}")
    if opts.lp_ft < 0:
        raise ValueError(f"lp_ft must be >= 0, got {opts.lp_ft}")
    return FullFinetune(vision_model(clip), num_classes, opts)
