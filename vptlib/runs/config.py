"""What determines a run: :class:`RunConfig`, how a profile's settings become one, and
its validation (every bad value is one :class:`~vptlib.errors.UserError` naming it).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vptlib.errors import UserError, did_you_mean
from vptlib.methods import METHODS, option_names, spec
from vptlib.models.hub import DEFAULT_MODEL, missing_folder
from vptlib.seeds import SEED_RANGE, is_seed

from .devices import PRECISIONS

EPOCH_STEPS = ("pass", "full-split")  # RunConfig.epoch_steps
# RunConfig.select: what a run keeps and how it makes its post-training choices.
SELECTIONS = {
    "val": "the epoch with the best validation accuracy (ties: lower validation loss), and every post-training "
    "choice (the probe's C, WiSE-FT's alpha, Tip-Adapter-F's alpha and beta) made on validation",
    "last": "the last epoch, and no choice made on validation: each method's fixed values stand in "
    "(validation is still scored each epoch for the curves, and calibrates the conformal sets)",
}


def setting(default: Any, help: str, *, flag: bool = True, choices: tuple[str, ...] | None = None) -> Any:
    """A :class:`RunConfig` field with its command-line help beside it: ``vptlib run`` makes one
    flag per field from these (``--batch-size`` for ``batch_size``; a bool gets ``--x`` and
    ``--no-x``), so the CLI is never a second list of the fields. ``flag=False``: set by code
    only; ``default`` :data:`dataclasses.MISSING`: required."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


@dataclass
class RunConfig:
    """Everything that determines a run. ``None`` means "the method's default"."""

    method: str = setting(dataclasses.MISSING, "the method (vptlib run --help lists them)")
    data: str = setting(dataclasses.MISSING, "a folder written by `vptlib data prepare`")
    model: str = setting(DEFAULT_MODEL, "hub id or local folder")
    # The commit actually loaded is recorded beside it (model_source in config.json).
    revision: str | None = setting(
        None, "a hub id's commit sha or branch (default: the pinned commit of vptlib.models.hub.PINNED, else main)"
    )
    epochs: int | None = setting(None, "training epochs (default: the method's)")
    batch_size: int = setting(32, "batch size")
    # head / prompt learning rate (the backbone's is scaled, see `full`)
    lr: float | None = setting(None, "learning rate (default: the method's)")
    weight_decay: float | None = setting(None, "weight decay (default: the method's)")
    optimizer: str | None = setting(
        None, "sgd (momentum 0.9) or adamw (default: the method's)", choices=("sgd", "adamw")
    )
    schedule: str = setting("cosine", "lr schedule, stepped per batch", choices=("cosine", "constant"))
    warmup: int = setting(0, "epochs of linear warm-up")
    seed: int = setting(0, "seed for everything")
    device: str = setting("auto", "auto | cpu | cuda | mps (under accelerate launch: the process's device)")
    # recorded resolved, see vptlib.runs.devices
    precision: str = setting(
        "auto",
        "autocast precision; auto: bf16 on GPUs of compute capability 8.0+ and on CPUs with AVX512-BF16/AMX, "
        "fp16 with loss scaling on older GPUs such as T4/V100, else fp32",
        choices=PRECISIONS,
    )
    grad_clip: float | None = setting(None, "max global gradient norm, 0 disables (default: the method's recipe)")
    early_stopping: int = setting(0, "patience in epochs without a better validation accuracy, 0 disables")
    select: str = setting(
        "val",
        "val: keep the best epoch on validation and make every choice there; last: the last epoch and "
        "each method's fixed values, nothing chosen on validation (the fixed protocol)",
        choices=("val", "last"),
    )
    augment: bool = setting(True, "batch augmentation for methods trained on images")
    test_curves: bool = setting(False, "also evaluate test every epoch, for plots only (never to select anything)")
    # False for the points of a tuning grid: the run is chosen among others on validation and
    # must not look at test. Not part of the identity, so the chosen point's run becomes the
    # final run of its seed, and its test split is evaluated then (vptlib.study.tuning).
    evaluate_test: bool = setting(True, "evaluate the test split (tuning grids do not)", flag=False)
    train_per_class: int | None = setting(None, "few-shot: at most this many training images per class")
    # A few-shot run under "full-split" takes the main table's number of steps instead of a
    # handful (the sweeps' budget, as CLIP-LoRA fixes its iterations in advance, not its epochs).
    epoch_steps: str = setting(
        "pass",
        "pass: an epoch is one pass over the training images; full-split: as many steps as one pass over "
        "the whole training split (few-shot runs keep the full run's step count)",
        choices=EPOCH_STEPS,
    )
    compile: bool = setting(False, "torch.compile the model (opt-in; measured by `make bench`)")
    profile: str = setting(
        "default",
        "the profile these runs belong to, a name or its file (profiles/smoke.yaml): records go to OUT/NAME/METHOD/RUN-ID",
    )
    out: str = setting("runs", "records root")
    # method options, e.g. prompt_tokens: each method's own flags (vptlib.methods.command_line_options)
    options: dict[str, Any] = field(default_factory=dict, metadata={"flag": False})

    def varies_with_seed(self) -> bool:
        """Whether two runs that differ only in their seed can differ: the method's own
        randomness (``MethodSpec.uses_seed``), or a few-shot subset the seed draws. A method
        that is seed-free on its data (zero-shot, the L-BFGS probe) is seeded on a K-shot
        subset, since another seed draws other images; a method that learns nothing (zero-shot)
        never is."""
        method = spec(self.method)
        return method.uses_seed(self.options) or (method.trains and self.train_per_class is not None)

    def resolved(self) -> RunConfig:
        d = spec(self.method).defaults if self.method in METHODS else None
        if d is None:
            return self
        return dataclasses.replace(
            self,
            epochs=d.epochs if self.epochs is None else self.epochs,
            lr=d.lr if self.lr is None else self.lr,
            weight_decay=d.weight_decay if self.weight_decay is None else self.weight_decay,
            optimizer=d.optimizer if self.optimizer is None else self.optimizer,
            grad_clip=d.grad_clip if self.grad_clip is None else self.grad_clip,
        )

    def identity(self) -> dict[str, Any]:
        """The fields that define the experiment (not where it is written)."""
        d = dataclasses.asdict(self)
        d.pop("out")
        d.pop("evaluate_test")
        d["data"] = str(Path(self.data).resolve())
        if Path(self.model).is_dir():  # "./tiny" and "tiny" are one model folder, so one run to resume
            d["model"] = str(Path(self.model).resolve())
        return d


def command_line_fields() -> list[tuple[dataclasses.Field, type]]:
    """The :class:`RunConfig` fields ``vptlib run`` has a flag for, each with the type its flag parses."""
    hints = typing.get_type_hints(RunConfig)
    out = []
    for f in dataclasses.fields(RunConfig):
        if f.metadata.get("flag", True):
            kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
            out.append((f, kinds[0]))
    return out


def run_config(method: str, hparams: dict | None = None, defaults: dict | None = None, **fields: Any) -> RunConfig:
    """A RunConfig from, in rising precedence: ``defaults`` (a profile's shared fields, such as
    its ``batch_size``), the method's ``hparams`` (what the profile writes for that method, such
    as CLAP's batch of 256), then ``fields`` (the caller's overrides).

    ``None`` values are ignored, so a notebook can pass every parameter it has.
    Method options (``prompt_tokens``, ...) may appear at any level.
    """
    given = {k: v for k, v in fields.items() if v is not None}
    merged = {**(defaults or {}), **(hparams or {}).get(method, {}), **given}
    merged = coerce(method, merged, "setting")
    known = set(RunConfig.__dataclass_fields__)
    options = {**merged.pop("options", {}), **{k: merged.pop(k) for k in list(merged) if k not in known}}
    return RunConfig(method=method, options=options, **merged)


# A number as YAML 1.1 (PyYAML) leaves it a string: "1e-3" has no dot, so it is not a float there.
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _types(method: str) -> dict[str, Any]:
    hints = typing.get_type_hints(RunConfig)
    if method in METHODS:
        hints.update(typing.get_type_hints(spec(method).options))
    return hints


def coerce(method: str, settings: dict[str, Any], where: str) -> dict[str, Any]:
    """``settings`` with each value of a typed field made that type, or a :class:`UserError`
    naming ``where.key``: an int field takes an int (or a float with an integer value, 8.0),
    never 2.5; a float field takes a finite number, or a number YAML 1.1 left as a string
    (``1e-3``); a bool field takes only true/false. Infinities and NaN are refused."""
    types = _types(method)
    out = dict(settings)
    for key, value in settings.items():
        want = types.get(key)
        if key == "options" and isinstance(value, dict):
            out[key] = coerce(method, value, where)
            continue
        if want is None or value is None:
            continue
        allowed = set(typing.get_args(want)) or {want}
        out[key] = _one(value, allowed, f"{where} {key}")
    return out


def _one(value: Any, allowed: set, name: str) -> Any:
    if bool in allowed:
        if isinstance(value, bool):
            return value
        raise UserError(f"{name} must be true or false, got {value!r}")
    if int in allowed:  # numbers.Integral: numpy's integers too
        fractional = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
        if fractional and math.isfinite(value) and float(value).is_integer():
            return int(value)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise UserError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    if float in allowed:
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if str in allowed and isinstance(value, Path):
        return str(value)
    if str in allowed and not isinstance(value, str):
        raise UserError(f"{name} must be text, got {value!r}")
    return value


def override_names(method: str) -> list[str]:
    """Every name a profile, a notebook's ``options`` or ``make run`` may set for ``method``:
    the run's own settings, then the method's options."""
    own = [f for f in RunConfig.__dataclass_fields__ if f not in ("method", "options")]
    return own + option_names(method)


def validate(cfg: RunConfig) -> None:
    """Raise a :class:`UserError` naming the first bad parameter."""
    if cfg.method not in METHODS:
        raise UserError(
            f"unknown method {cfg.method!r}{did_you_mean(cfg.method, METHODS)}; choose one of: {', '.join(METHODS)}"
        )
    missing = missing_folder(cfg.model)  # a mistyped folder: say so now, not after asking the hub
    if missing:
        raise UserError(missing)
    checks = [
        (cfg.epochs >= 0, f"--epochs must be >= 0, got {cfg.epochs}"),
        (1 <= cfg.batch_size <= 65536, f"--batch-size must be in [1, 65536], got {cfg.batch_size}"),
        (is_seed(cfg.seed), f"--seed must be an integer in {SEED_RANGE}, got {cfg.seed}"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr must be a positive number, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, got {cfg.optimizer!r}"),
        (cfg.schedule in ("cosine", "constant"), f"--schedule must be cosine or constant, got {cfg.schedule!r}"),
        (cfg.warmup >= 0, f"--warmup must be >= 0, got {cfg.warmup}"),
        (cfg.epoch_steps in EPOCH_STEPS, f"--epoch-steps must be {' or '.join(EPOCH_STEPS)}, got {cfg.epoch_steps!r}"),
        (cfg.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}"),
        (
            cfg.train_per_class is None or cfg.train_per_class >= 1,
            f"--train-per-class must be >= 1, got {cfg.train_per_class}",
        ),
        (cfg.grad_clip >= 0, f"--grad-clip must be >= 0, got {cfg.grad_clip}"),
        (cfg.early_stopping >= 0, f"--early-stopping must be >= 0, got {cfg.early_stopping}"),
        (cfg.select in SELECTIONS, f"--select must be {' or '.join(SELECTIONS)}, got {cfg.select!r}"),
        (
            not (cfg.select == "last" and cfg.early_stopping),
            "--early-stopping stops on validation accuracy: it cannot go with --select last",
        ),
        (spec(cfg.method).trains or cfg.epochs == 0, f"{cfg.method} trains nothing: use --epochs 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    unknown = sorted(set(cfg.options) - set(option_names(cfg.method)))
    if unknown:
        valid = ", ".join(option_names(cfg.method)) or "none"
        raise UserError(f"option(s) {', '.join(unknown)} do not apply to {cfg.method}; valid: {valid}")
    if not Path(cfg.data).is_dir():
        raise UserError(f"--data {cfg.data} does not exist: run `vptlib data prepare` first")
