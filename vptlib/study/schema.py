"""A profile's schema beyond the types of its keys: the ranges, repeats and sizes of its
values, every run setting typed as the run will use it (:func:`vptlib.runs.config.coerce`),
and a YAML reader bounded in size and in alias expansion. :func:`check` raises one
:class:`~vptlib.errors.UserError` naming the first bad value, before any work.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from vptlib.errors import UserError
from vptlib.paths import component
from vptlib.seeds import SEED_RANGE, is_seed

MAKE_UNSAFE = "#%$:;\\*?[]\"'`=|&<>"
SHA = re.compile(r"^[0-9a-f]{40}$")
MAX_BYTES = 1 << 20  # a profile is a page of settings, not data
MAX_NODES = 100_000  # YAML nodes after expanding aliases: a "billion laughs" file stops here
MAX_GRID = 10_000  # points of one tuning grid or one sweep (each point is a training run)


def safe_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of at most :data:`MAX_BYTES`, refused when its aliases would expand
    to more than :data:`MAX_NODES` nodes (counted on the composed graph, before building it)."""
    if path.stat().st_size > MAX_BYTES:
        raise UserError(f"profile {path} is larger than {MAX_BYTES} bytes; a profile holds settings only")
    node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    count, stack = 0, [node] if node is not None else []
    while stack:  # an alias is the same node object again, so a shared subtree counts each time
        n = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise UserError(f"profile {path} expands to more than {MAX_NODES} values (nested YAML aliases?)")
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend(x for pair in n.value for x in pair)
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check(p: Any, path: Path) -> None:
    """Validate a loaded :class:`~vptlib.study.profile.Profile` ``p`` read from ``path``, in place."""
    from vptlib.methods import METHODS
    from vptlib.runs.devices import DEVICES, PRECISIONS

    def bad(msg: str) -> UserError:
        return UserError(f"profile {path}: {msg}")

    try:  # each names a folder: runs/<profile>/, runs/<profile>-<sweep>/
        component(p.profile, "profile name")
        for name in p.sweeps:
            component(name, "sweep name")
    except UserError as exc:
        raise bad(str(exc)) from None
    for key in ("data", "runs"):  # file names in make's rules: a space is escaped, these cannot be
        odd = sorted(set(getattr(p, key)) & set(MAKE_UNSAFE))
        if odd or any(not ch.isprintable() for ch in getattr(p, key)):
            raise bad(
                f"{key} {getattr(p, key)!r} holds {' '.join(odd) or 'a control character'}, which make cannot "
                f"use in a file name; rename the folder or link to it from a plain path"
            )
    if not p.seeds or not all(is_seed(s) for s in p.seeds):
        raise bad(f"seeds must be a non-empty list of integers in {SEED_RANGE}, got {p.seeds!r}")
    if len(set(p.seeds)) != len(p.seeds):
        raise bad(f"seeds {p.seeds} names a seed twice: each seed is one independent run")
    if not is_seed(p.seed):
        raise bad(f"seed must be in {SEED_RANGE}, got {p.seed}")
    if p.tuning_seed is not None and not is_seed(p.tuning_seed):
        raise bad(f"tuning_seed must be in {SEED_RANGE}, got {p.tuning_seed}")
    if not is_seed(p.grid_seed) or p.grid_seed in p.seeds:
        raise bad(f"tuning_seed {p.grid_seed} is a reported seed ({p.seeds}): the grids need a seed of their own")
    if p.revision is not None and not SHA.match(p.revision):
        raise bad(f"revision must be a full 40-character commit sha (a branch moves), got {p.revision!r}")
    if p.precision not in PRECISIONS:
        raise bad(f"precision must be one of {', '.join(PRECISIONS)}, got {p.precision!r}")
    if not 1 <= p.batch_size <= 65536:
        raise bad(f"batch_size must be in [1, 65536], got {p.batch_size}")
    if p.reference not in METHODS:
        raise bad(f"reference: unknown method {p.reference!r}; methods: {', '.join(METHODS)}")
    for method, hp in p.hparams.items():
        if method not in METHODS:
            raise bad(f"hparams: unknown method {method!r}; methods: {', '.join(METHODS)}")
        if not isinstance(hp, dict):
            raise bad(f"hparams.{method} must be a mapping, got {hp!r}")
        p.hparams[method] = _typed(method, hp, f"hparams.{method}", bad)
    for method, axes in p.grids.items():
        _check_grid(method, axes, bad)
    _check_runs(p, bad)
    _check_source(p.source, bad)
    if p.device not in DEVICES:
        raise bad(f"device must be one of {', '.join(DEVICES)}, got {p.device!r}")
    if p.banner not in BANNERS:
        raise bad(f"banner must be one of {', '.join(BANNERS)}, got {p.banner!r}")
    _check_variants(p, bad)
    for name, sweep in p.sweeps.items():
        if not isinstance(sweep, dict) or not isinstance(sweep.get("methods"), list):
            raise bad(f"sweeps.{name} must be a mapping with a list of methods")
        unknown = [m for m in sweep["methods"] if m not in METHODS]
        if unknown:
            raise bad(f"sweeps.{name}: unknown method(s) {', '.join(map(str, unknown))}")
        _check_sweep(name, sweep, bad)


# Axes a tuning grid may span besides the method's own options.
GRID_FIELDS = ("lr", "base_lr", "weight_decay", "epochs", "optimizer", "warmup", "schedule", "batch_size")


def _check_grid(method: str, axes: Any, bad) -> None:
    from vptlib.methods import METHODS, option_names

    if method not in METHODS or not METHODS[method].trains:
        trained = ", ".join(m for m, s in METHODS.items() if s.trains)
        raise bad(f"grids: {method!r} is not a method that trains; methods: {trained}")
    if not isinstance(axes, dict):
        raise bad(f"grids.{method} must map axes to lists of values, got {axes!r}")
    allowed = (*GRID_FIELDS, *option_names(method))
    for axis, values in axes.items():
        if axis not in allowed:
            raise bad(
                f"grids.{method}: {axis!r} is not a tunable field or option of {method}; axes: {', '.join(allowed)}"
            )
        if not isinstance(values, list) or not values:
            raise bad(f"grids.{method}.{axis} must be a non-empty list of values, got {values!r}")
        typed = [_typed(method, {axis: v}, f"grids.{method}", bad)[axis] for v in values]
        if len(set(map(repr, typed))) != len(typed):
            raise bad(f"grids.{method}.{axis} lists a value twice: {values}")
        axes[axis] = typed
    size = math.prod(len(v) for v in axes.values())
    if size > MAX_GRID:
        raise bad(f"grids.{method} has {size} points (each a training run); at most {MAX_GRID}")
    if "lr" in axes and "base_lr" in axes:
        raise bad(f"grids.{method}: give lr or base_lr (lr = base_lr x batch_size / 256), not both")


def _check_runs(p: Any, bad) -> None:
    """Each method's profile setting, and each grid value on its own, is a run the engine
    accepts (:func:`vptlib.runs.config.validate`: known options, ranges, choices), so an
    ``optimizer: adam`` or a misspelt option stops the build here, not hours in."""
    from vptlib.runs.config import run_config, validate

    from .protocols import SELECT

    for method in {*p.hparams, *p.grids}:
        base = dict(p.hparams.get(method, {}))
        variants = [("hparams", base)]
        for axis, values in p.grids.get(method, {}).items():
            key = "lr" if axis == "base_lr" else axis  # a base_lr stands for a positive lr
            variants += [(f"grids.{method}.{axis}", {**base, key: v}) for v in values]
        for where, hp in variants:
            try:
                shared = {"data": ".", "model": p.model, "batch_size": p.batch_size, "precision": p.precision}
                shared["select"] = SELECT.get(p.protocol, "val")
                validate(run_config(method, {method: hp}, shared).resolved())
            except (UserError, TypeError) as exc:
                raise bad(f"{where if where != 'hparams' else f'hparams.{method}'}: {exc}") from None


BANNERS = ("none", "smoke")  # "smoke": every page says its numbers test the pipeline only
SOURCE_KEYS = ("phantoms", "prepare", "kaggle", "kaggle_handle")


def _check_source(source: dict[str, Any], bad) -> None:
    """``source:`` checked as prepare and the phantom writer will read it, before either runs."""
    from vptlib.data.phantoms import check_options
    from vptlib.data.prepare import PrepareOptions

    unknown = sorted(set(source) - set(SOURCE_KEYS))
    if unknown:
        raise bad(f"source: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(SOURCE_KEYS)}")
    for key, want in (("phantoms", dict), ("prepare", dict), ("kaggle", str), ("kaggle_handle", str)):
        if key in source and not isinstance(source[key], want):
            raise bad(f"source.{key} must be a {want.__name__}, got {source[key]!r}")
    try:
        if "phantoms" in source:
            check_options(**source["phantoms"])
        if "prepare" in source:
            PrepareOptions(Path("."), Path("."), **source["prepare"])
    except UserError as exc:
        raise bad(f"source: {exc}") from None
    except TypeError as exc:  # an unknown setting
        raise bad(f"source: {str(exc).split('() ')[-1]}") from None


def _typed(method: str, settings: dict[str, Any], where: str, bad) -> dict[str, Any]:
    from vptlib.runs.config import coerce

    try:
        return coerce(method, settings, where)
    except UserError as exc:
        raise bad(str(exc)) from None


def _check_sweep(name: str, sweep: dict[str, Any], bad) -> None:
    """Every axis a non-empty list without repeats, seeds and counts whole numbers, and the
    grid bounded, so a bad value stops here and not in a worker hours later."""
    size = 1
    for axis, values in sweep.items():
        if axis == "methods" or axis == "hparams":
            continue
        if not isinstance(values, list) or not values:
            raise bad(f"sweeps.{name}.{axis} must be a non-empty list, got {values!r}")
        if axis == "seeds" and not all(is_seed(s) for s in values):
            raise bad(f"sweeps.{name}.seeds must be integers in {SEED_RANGE}, got {values!r}")
        for method in sweep["methods"]:
            values = [_typed(method, {axis: v}, f"sweeps.{name}", bad)[axis] for v in values]
        if len(set(map(repr, values))) != len(values):
            raise bad(f"sweeps.{name}.{axis} lists a value twice: {values}")
        if axis in ("train_per_class", "prompt_tokens", "epochs") and min(values) < (
            0 if axis == "prompt_tokens" else 1
        ):
            raise bad(f"sweeps.{name}.{axis} must hold counts of at least 1, got {values}")
        sweep[axis] = values
        size *= len(values)
    size *= len(sweep["methods"])
    if size > MAX_GRID:
        raise bad(f"sweeps.{name} has {size} points (each a training run); at most {MAX_GRID}")


def _check_variants(p: Any, bad) -> None:
    """``protocol``, ``backbones:`` and ``protocols:`` (:meth:`~vptlib.study.profile.Profile.variant`):
    known protocols, keys and methods, the reference among each variant's methods (its
    comparisons need it), a pinned revision, and every variant's runs valid as the main ones."""
    from vptlib.methods import METHODS

    from .protocols import BACKBONE_KEYS, PROTOCOL_KEYS, PROTOCOLS, SELECT

    if p.protocol not in PROTOCOLS:
        raise bad(f"protocol must be one of {', '.join(PROTOCOLS)}, got {p.protocol!r}")
    if SELECT[p.protocol] == "last" and p.grids:
        raise bad(f"protocol {p.protocol} chooses nothing on validation: remove grids ({', '.join(p.grids)})")
    for key, found, allowed in (("backbones", p.backbones, BACKBONE_KEYS), ("protocols", p.protocols, PROTOCOL_KEYS)):
        for name, spec in found.items():
            where = f"{key}.{name}"
            try:
                component(str(name), f"{key} name")
            except UserError as exc:
                raise bad(str(exc)) from None
            if not isinstance(spec, dict) or not isinstance(spec.get("methods"), list) or not spec["methods"]:
                raise bad(f"{where} must be a mapping with a non-empty list of methods")
            unknown = sorted(set(spec) - set(allowed))
            if unknown:
                raise bad(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
            odd = [m for m in spec["methods"] if m not in METHODS]
            if odd or len(set(spec["methods"])) != len(spec["methods"]):
                raise bad(f"{where}.methods: unknown or repeated method(s) {odd or spec['methods']}")
            reference = spec.get("reference", p.reference) if key == "backbones" else p.reference
            if reference not in spec["methods"]:
                raise bad(f"{where}.methods must include the reference {reference} (every comparison is with it)")
            hparams = spec.get("hparams", {})
            if not isinstance(hparams, dict) or not all(isinstance(v, dict) for v in hparams.values()):
                raise bad(f"{where}.hparams must map methods to settings, got {hparams!r}")
            for method, hp in hparams.items():
                if method not in METHODS:
                    raise bad(f"{where}.hparams: unknown method {method!r}")
                hparams[method] = _typed(method, hp, f"{where}.hparams.{method}", bad)
            if key == "backbones":
                if not isinstance(spec.get("model"), str) or not spec["model"]:
                    raise bad(f"{where}.model must be a hub id or a local folder")
                rev = spec.get("revision")
                if rev is not None and (not isinstance(rev, str) or not SHA.match(rev)):
                    raise bad(f"{where}.revision must be a full 40-character commit sha (a branch moves), got {rev!r}")
            elif name not in PROTOCOLS or name == p.protocol:
                others = [x for x in PROTOCOLS if x != p.protocol]
                raise bad(f"{where}: a protocol other than this profile's ({p.protocol}): one of {', '.join(others)}")
            _check_runs(p.variant(key[:-1], name), lambda msg, w=where: bad(f"{w}: {msg}"))
