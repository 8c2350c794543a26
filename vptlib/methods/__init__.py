"""The methods, behind one entry point: ``build(method, clip, num_classes, **options)``.

Each method lives in its own module with its ``Options`` dataclass and recommended
training settings (``DEFAULTS``) beside it. ``build`` checks the options against the
method's dataclass, so an option that does not apply is an error, not a silent no-op.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..classes import CLASSES
from . import clip_lora, flyp, full, linear, text_ce, vision_lora, visual_prompt, wise_ft, zero_shot
from .base import Classifier, TrainDefaults, count_parameters


@dataclass(frozen=True)
class MethodSpec:
    build: Callable[..., Classifier]
    options: type
    defaults: TrainDefaults
    title: str  # how reports name it
    uses_text: bool = False  # needs the tokenizer and the class names


# The one list of methods, in report order: the CLI, the report, the bench and the build
# read it from here (tests check that the Makefile and _toc.yml list the same).
METHODS: dict[str, MethodSpec] = {
    "zero_shot": MethodSpec(zero_shot.build, zero_shot.Options, zero_shot.DEFAULTS, "Zero-shot CLIP", True),
    "linear": MethodSpec(linear.build, linear.Options, linear.DEFAULTS, "Linear probe"),
    "vpt_shallow": MethodSpec(
        visual_prompt.build_shallow, visual_prompt.Options, visual_prompt.DEFAULTS, "VPT-shallow"
    ),  # fmt: skip
    "vpt_deep": MethodSpec(visual_prompt.build_deep, visual_prompt.Options, visual_prompt.DEFAULTS, "VPT-deep"),
    "vision_lora": MethodSpec(
        vision_lora.build, vision_lora.Options, vision_lora.DEFAULTS, "Vision LoRA + linear head"
    ),  # fmt: skip
    "clip_lora": MethodSpec(clip_lora.build, clip_lora.Options, clip_lora.DEFAULTS, "CLIP-LoRA", True),
    "full": MethodSpec(full.build, full.Options, full.DEFAULTS, "Full fine-tuning"),
    "wise_ft": MethodSpec(wise_ft.build, wise_ft.Options, wise_ft.DEFAULTS, "WiSE-FT", True),
    "flyp": MethodSpec(flyp.build, flyp.Options, flyp.DEFAULTS, "FLYP", True),
    "text_ce": MethodSpec(
        text_ce.build, text_ce.Options, text_ce.DEFAULTS, "Cross-entropy on class texts (FLYP's ablation)", True
    ),  # fmt: skip
}


def spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[method]


def option_names(method: str) -> list[str]:
    return [f.name for f in dataclasses.fields(spec(method).options)]


def build(method: str, clip: Any, num_classes: int, **options: Any) -> Classifier:
    """Build ``method`` on ``clip`` (a :class:`~vptlib.backbone.Clip`, or a bare
    ``CLIPModel`` for the image-only methods) for ``num_classes`` classes.

    The returned module's ``requires_grad`` parameters are exactly what the method
    trains. The caller's model is never modified: each method works on a copy.
    """
    s = spec(method)
    valid = option_names(method)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(unknown)} do not apply to {method}; valid options: {', '.join(valid) or 'none'}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    opts = s.options(**options)
    if s.uses_text:
        if not hasattr(clip, "tokenizer"):
            raise ValueError(f"{method} needs the tokenizer: pass the Clip bundle from load_clip, not a bare model")
        if opts.class_names is None:
            if num_classes != len(CLASSES):
                raise ValueError(f"{method} needs class_names for {num_classes} classes")
            opts.class_names = CLASSES
        if len(opts.class_names) != num_classes:
            raise ValueError(f"class_names has {len(opts.class_names)} names for {num_classes} classes")
        opts.class_names = tuple(opts.class_names)
    model = s.build(clip, num_classes, opts)
    model.options = dataclasses.asdict(opts)
    return model


__all__ = ["METHODS", "Classifier", "build", "count_parameters", "option_names", "spec"]
