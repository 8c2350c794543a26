"""Vision LoRA: low-rank updates to the image tower's attention projections, plus a new
linear head on the post-LN CLS feature.

This is *not* CLIP-LoRA (that is :mod:`.clip_lora`): only the image tower is adapted,
the classifier is a new linear head rather than the class texts, and the update is
scaled by ``alpha / r`` (peft's default). It borrows CLIP-LoRA's rank 2, alpha 1,
dropout 0.25 on the query, key and value projections and AdamW at 2e-4. The adapters
come from Hugging Face ``peft`` (``inject_adapter_in_model``). Trainable parameters
with ``L`` layers, width ``D``, rank ``r`` and ``T`` target projections:
``L*T*2*r*D + D*C + C``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .base import Classifier, TrainDefaults, flag, linear_head, vision_model

DEFAULTS = TrainDefaults(epochs=20, lr=2e-4, optimizer="adamw", weight_decay=0.01)


@dataclass
class Options:
    """The adapter's settings; CLIP-LoRA's options extend these."""

    rank: int = flag(2, "--rank", "LoRA: rank r of the update B @ A (default 2)")
    alpha: float = flag(
        1.0,
        "--lora-alpha",
        "LoRA: the update is scaled by alpha / r (vision_lora) or alpha / sqrt(r) (clip_lora) (default 1)",
    )
    dropout: float = flag(0.25, "--lora-dropout", "LoRA: dropout on the adapter's input, training only (default 0.25)")
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")  # attention projections adapted


def check(opts) -> None:
    if opts.rank < 1:
        raise ValueError(f"rank must be >= 1, got {opts.rank}")
    if not 0 <= opts.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {opts.dropout}")
    if not opts.targets:
        raise ValueError("targets must name at least one projection")


def lora_config(opts, rslora: bool):
    """peft's ``LoraConfig`` of these options (what ``adapter_config.json`` records)."""
    # peft is imported here, not at the top: importing it takes seconds (it pulls in
    # accelerate and more), and every `vptlib` command, --help included, reads this registry.
    from peft import LoraConfig

    return LoraConfig(
        r=opts.rank,
        lora_alpha=opts.alpha,
        lora_dropout=opts.dropout,
        target_modules=list(opts.targets),
        bias="none",
        use_rslora=rslora,
    )


def adapt(module: torch.nn.Module, opts, rslora: bool) -> None:
    """Inject LoRA adapters into ``module`` in place; only they train afterwards."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(lora_config(opts, rslora), module)
    for name, p in module.named_parameters():
        p.requires_grad_("lora_" in name)


@dataclass
class PeftExport:
    """Where a method's LoRA adapters live, for saving them as PEFT does: ``module`` holds
    them, ``base`` is the transformers class they load onto, ``prefix`` the path of
    ``module`` inside it, and ``config`` the ``LoraConfig``."""

    module: torch.nn.Module
    base: str
    prefix: str
    config: object


class VisionLoRA(Classifier):
    trainable_patterns = (
        "vision.*.lora_A.*",
        "vision.*.lora_B.*",
        "head.*",
    )  # what it trains (the contract test holds it to this)

    def __init__(self, vision, num_classes: int, opts: Options):
        super().__init__()
        self.vision = copy.deepcopy(vision).requires_grad_(False)
        adapt(self.vision, opts, rslora=False)
        self.head = linear_head(vision.config.hidden_size, num_classes)
        self.rank, self.targets = opts.rank, tuple(opts.targets)
        # The adapters in PEFT's format, loadable onto transformers' CLIPVisionModel (which
        # self.vision is: CLIPModel.vision_model) by runs.record_writer.save_adapter; the head is
        # not a LoRA tensor and stays in trainable.safetensors.
        self.peft_export = PeftExport(self.vision, "CLIPVisionModel", "", lora_config(opts, False))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.vision(pixel_values=pixel_values).pooler_output.float())

    def describe(self) -> str:
        return f"rank-{self.rank} LoRA on {', '.join(self.targets)} of every vision layer, and a new linear head"


def build(clip, num_classes: int, opts: Options) -> VisionLoRA:
    check(opts)
    return VisionLoRA(vision_model(clip), num_classes, opts)
