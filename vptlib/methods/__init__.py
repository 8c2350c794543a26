"""The methods, behind one entry point: ``build(method, clip, num_classes, **options)``.

Each method lives in its own module with its ``Options`` dataclass and recommended
training settings (``DEFAULTS``) beside it, and returns a
:class:`~vptlib.methods.base.Classifier` (the contract). ``build`` checks the options
against the method's dataclass, so an option that does not apply is an error, not a
silent no-op.

Adding a method (the checklist; ``tests/methods/test_contract.py`` checks the result):

1. Write ``methods/<name>.py``: ``Options`` (a dataclass; subclass
   :class:`~vptlib.methods.base.TextOptions` if it reads the class texts; give each
   field a default, and :func:`~vptlib.methods.base.flag` for a command-line flag),
   ``DEFAULTS`` (the paper's epochs, learning rate, optimiser, weight decay and gradient
   clipping; epochs 0 if nothing trains), a :class:`~vptlib.methods.base.Classifier`
   subclass (its ``requires_grad`` parameters are what it trains, and its
   ``trainable_patterns`` name them; set the capabilities that apply, such as
   ``unused_params_possible`` when a trainable tensor may get no gradient in a step;
   override the hooks it needs; wrap another method with
   :class:`~vptlib.methods.base.Wrapper`), and ``build(clip, num_classes, opts)``.
2. Add one line to :data:`METHODS` below, where it belongs in report order, with
   ``fixed_recipe=True`` if its paper tunes none of its settings on validation and
   ``seeded=`` a function of its options if some options make its runs independent of the
   seed (they then run once).
3. Say in ``book/methods.md`` what it trains and which paper's recipe it follows, and name
   it in the list of ``book/intro.md`` (``tests/test_prose.py``); add its citation to
   ``book/references.bib``; give it a grid in every profile that runs it if its
   paper tunes it (the smoke profile: two points); list its module in the user guide's layout
   tree; if it is named after a paper, give it a recipe card (:mod:`.cards`); run
   ``python -m vptlib.cli.run_flags`` so ``vptlib run`` knows its flags without importing torch
   (``tests/test_cli_speed.py`` says when they are stale).

Nothing else names a method: the CLI's flags, ``make run``, the book's table of contents,
the report's rows, the sweeps and the bench all read this registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import CLIPModel

from vptlib.data.classes import CLASSES
from vptlib.errors import did_you_mean

from . import (
    clap,
    clip_lora,
    clip_svd,
    coop,
    flyp,
    full,
    gda,
    linear,
    prolip,
    text_ce,
    tip_adapter,
    vision_lora,
    visual_prompt,
    wise_ft,
    zero_shot,
)
from .base import Classifier, TextOptions, TrainDefaults, count_parameters


@dataclass(frozen=True)
class MethodSpec:
    """A method as the rest of vptlib sees it; nothing outside ``methods/`` names a method.

    What it needs before it is built is read from what its module declares, never stated twice.
    """

    build: Callable[..., Classifier]  # (clip, num_classes, options) -> Classifier
    options: type  # the method's Options dataclass: its fields are its CLI flags and profile keys
    defaults: TrainDefaults  # recommended epochs, lr, optimizer, weight decay
    title: str  # how reports name it

    @property
    def uses_text(self) -> bool:
        """Needs the tokenizer and the class names: its Options are :class:`TextOptions`."""
        return issubclass(self.options, TextOptions)

    # (options) -> whether a run's result depends on its seed; None: whenever it trains.
    seeded: Callable[[Any], bool] | None = None
    # True: the paper fixes its settings and tunes none of them on validation (CoOp, CLAP,
    # Tip-Adapter-F's training), so the profiles give it no grid (tests/study/test_tuning.py).
    fixed_recipe: bool = False
    # True: it reads only the frozen image and text features (vision_model, visual_projection,
    # get_text_features, logit_scale), so it runs on any dual encoder with that interface
    # (BiomedCLIP: vptlib.models.open_clip_format); False: it needs transformers' CLIPModel inside.
    any_clip: bool = False

    @property
    def trains(self) -> bool:
        """False when nothing is optimised (zero-shot: ``DEFAULTS.epochs == 0``), so it runs once."""
        return self.defaults.epochs > 0

    def uses_seed(self, options: dict[str, Any] | None = None) -> bool:
        """Whether runs with these options differ by seed; a method whose runs do not (zero-shot,
        the L-BFGS probe) runs once, whatever the seeds, since more seeds would repeat one fit."""
        if not self.trains:
            return False
        known = {k: v for k, v in (options or {}).items() if k in {f.name for f in dataclasses.fields(self.options)}}
        return True if self.seeded is None else self.seeded(self.options(**known))


def _spec(
    module: Any,
    title: str,
    build: Callable[..., Classifier] | None = None,
    *,
    seeded: Callable[[Any], bool] | None = None,
    fixed_recipe: bool = False,
    any_clip: bool = False,
) -> MethodSpec:
    """A registry entry: every setting is passed here by name (a misspelt one is an error),
    none is looked up on the module."""
    return MethodSpec(build or module.build, module.Options, module.DEFAULTS, title, seeded, fixed_recipe, any_clip)


# The one list of methods, in report order: the CLI, the report, the bench, the sweeps and
# the build read it from here (tests check that the Makefile and _toc.yml list the same).
METHODS: dict[str, MethodSpec] = {
    "zero_shot": _spec(zero_shot, "Zero-shot CLIP", any_clip=True),
    "linear": _spec(linear, "Linear probe", seeded=linear.uses_seed, any_clip=True),
    "gda": _spec(gda, "GDA (Gaussian discriminant + zero-shot)", any_clip=True),
    # ProLIP, CLAP, Tip-Adapter-F, CoOp and CLIP-SVD: their papers fix every training setting (no grid).
    "prolip": _spec(prolip, "ProLIP (visual projection)", fixed_recipe=True, any_clip=True),
    "clap": _spec(clap, "CLAP (zero-shot-initialised probe)", fixed_recipe=True, any_clip=True),
    "tip_adapter_f": _spec(tip_adapter, "Tip-Adapter-F", fixed_recipe=True, any_clip=True),
    "coop": _spec(coop, "CoOp", fixed_recipe=True),
    "vpt_shallow": _spec(visual_prompt, "VPT-shallow", visual_prompt.build_shallow),
    "vpt_deep": _spec(visual_prompt, "VPT-deep", visual_prompt.build_deep),
    "vision_lora": _spec(vision_lora, "Vision LoRA + linear head"),
    "clip_lora": _spec(clip_lora, "CLIP-LoRA"),
    "clip_svd": _spec(clip_svd, "CLIP-SVD (singular values)", fixed_recipe=True),
    "full": _spec(full, "Full fine-tuning"),
    "wise_ft": _spec(wise_ft, "WiSE-FT"),
    "flyp": _spec(flyp, "FLYP"),
    "text_ce": _spec(text_ce, "Cross-entropy on class texts (FLYP's ablation)"),
}


def spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}{did_you_mean(method, METHODS)}; choose one of: {', '.join(METHODS)}"
        )
    return METHODS[method]


def option_names(method: str) -> list[str]:
    return [f.name for f in dataclasses.fields(spec(method).options)]


def command_line_options() -> dict[str, tuple[str, type, str]]:
    """Every method option with a command-line flag: name -> (flag, type, help).

    Read from the ``Options`` fields declared with :func:`~vptlib.methods.base.flag`;
    methods sharing an option (LoRA's rank) declare the same flag.
    """
    out: dict[str, tuple[str, type, str]] = {}
    for s in METHODS.values():
        for f in dataclasses.fields(s.options):
            if "flag" in f.metadata:
                typ = type(f.default)
                if f.name in out and out[f.name][:2] != (f.metadata["flag"], typ):
                    raise TypeError(f"option {f.name} has two flags: {out[f.name][0]} and {f.metadata['flag']}")
                out.setdefault(f.name, (f.metadata["flag"], typ, f.metadata["help"]))
    return out


def build(method: str, clip: Any, num_classes: int, **options: Any) -> Classifier:
    """Build ``method`` on ``clip`` (a :class:`~vptlib.models.backbone.Clip`, or a bare
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
    inner = getattr(clip, "model", clip)
    if not s.any_clip and not isinstance(inner, CLIPModel):
        runs_on_any = ", ".join(m for m, spec_ in METHODS.items() if spec_.any_clip)
        raise ValueError(
            f"{method} needs a transformers CLIPModel, not {type(inner).__name__}; on this model run the "
            f"frozen-feature methods: {runs_on_any}"
        )
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


__all__ = ["METHODS", "Classifier", "build", "command_line_options", "count_parameters", "option_names", "spec"]
