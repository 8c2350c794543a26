"""A build profile (``profiles/NAME.yaml``): the parameters every notebook of one book shares.

:func:`load` reads and validates it: invalid YAML, an unknown key or a value of the
wrong type is one :class:`~vptlib.errors.UserError` line naming the key, before
anything runs. :class:`Profile` documents each key where it is defined.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vptlib import REPO
from vptlib.errors import UserError, did_you_mean
from vptlib.switches import flag

from . import schema
from .protocols import SELECT, VARIANT_KINDS

if TYPE_CHECKING:
    from vptlib.runs.config import RunConfig


@dataclass
class Profile:
    profile: str  # the build's name: runs go to <runs>/<profile>/, pages are stamped with it
    model: str  # hub id or local folder of a CLIPModel
    data: str  # the prepared data folder (`vptlib data prepare --out`)
    revision: str | None = None  # the hub id's commit sha (vptlib.models.hub); unused for a local folder
    banner: str = "none"  # "smoke": every page says its numbers test the pipeline only
    dry_run: bool = False  # set by VPTLIB_DRY_RUN (make book DRY_RUN=1), never in a file: see dry_run()
    runs: str = "runs"  # root of the run records
    seed: int = 0  # the seed of single runs (sweeps have their own seeds)
    seeds: list[int] = field(default_factory=lambda: [0])  # every trained method runs once per seed
    # The seed of every tuning-grid point; never a reported seed, so the grid winner's luck
    # on its own seed is not in the reported mean. None: one more than the largest seed.
    tuning_seed: int | None = None
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (see vptlib.runs.devices)
    batch_size: int = 32
    reference: str = "vpt_shallow"  # the method every other is compared with, fixed before any result
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method: RunConfig fields, options
    # per method: axes (RunConfig fields or method options) -> values, tried with the tuning
    # seed and chosen on validation before every reported seed runs (vptlib.study.tuning)
    grids: dict[str, dict[str, list]] = field(default_factory=dict)
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)  # named grids for `make sweep` and Curves
    source: dict[str, Any] = field(default_factory=dict)  # how to obtain the data (phantoms | kaggle, prepare)
    protocol: str = "validated"  # PROTOCOLS: how this profile's runs choose their settings and epochs
    # Studies beside this one, each a profile derived from it (Profile.variant, vptlib.study.variants)
    # with its runs under <runs>/<profile>-<kind>-<name>/: the same data, seeds and reference,
    # and either another CLIP (backbones: name -> {model, revision, methods, hparams}) or another
    # protocol (protocols: protocol -> {methods, hparams}); hparams override this profile's per method.
    backbones: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def grid_seed(self) -> int:
        """The seed the tuning grids run with: ``tuning_seed``, else one past every reported seed."""
        return self.tuning_seed if self.tuning_seed is not None else max(self.seeds) + 1

    @property
    def sweep_methods(self) -> list[str]:
        """The methods the sweeps run, each once: each sweep starts from its methods' tuned
        settings, so the Curves page waits for their experiment pages (the Makefile's look-up)."""
        return list(dict.fromkeys(m for sweep in self.sweeps.values() for m in sweep.get("methods", [])))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_model(self, model: str | None) -> Profile:
        """This profile with another model (``make book MODEL=``): the pinned revision was the
        profile model's, so the other one takes its own default (:mod:`vptlib.models.hub`)."""
        return self if not model or model == self.model else dataclasses.replace(self, model=model, revision=None)

    def with_backbones(self, folders: dict[str, str]) -> Profile:
        """This profile with some backbones' models replaced by local folders (``make book
        BACKBONES=name=folder``), as :meth:`with_model` does for the main one."""
        unknown = sorted(set(folders) - set(self.backbones))
        if unknown:
            raise UserError(
                f"BACKBONES names {', '.join(unknown)}, which profile {self.profile} does not have; "
                f"its backbones: {', '.join(self.backbones) or 'none'}"
            )
        backbones = {
            n: {**b, "model": folders[n], "revision": None} if n in folders else b for n, b in self.backbones.items()
        }
        return dataclasses.replace(self, backbones=backbones)

    def variant(self, kind: str, name: str) -> Profile:
        """The study of backbone or protocol ``name`` beside this one, as a profile of its own:
        runs under ``<runs>/<profile>-<kind>-<name>/``, this profile's data, seeds, tuning seed,
        batch size and reference, its ``hparams`` with the variant's over them, and no sweeps
        or variants of its own. A backbone keeps this protocol (and its grids); a protocol
        keeps this model, and "fixed" has no grids."""
        if kind not in VARIANT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(VARIANT_KINDS)}, got {kind!r}")
        found = self.backbones if kind == "backbone" else self.protocols
        if name not in found:
            raise UserError(f"profile {self.profile} has no {kind} {name!r}; it has: {', '.join(found) or 'none'}")
        spec, own = found[name], found[name].get("hparams", {})
        hparams = {m: {**self.hparams.get(m, {}), **own.get(m, {})} for m in {**self.hparams, **own}}
        changes: dict[str, Any] = dict(
            profile=f"{self.profile}-{kind}-{name}", hparams=hparams, backbones={}, protocols={}, sweeps={}
        )
        if kind == "backbone":  # a backbone that cannot run the reference names its own (BiomedCLIP: no VPT)
            changes.update(
                model=spec["model"], revision=spec.get("revision"), reference=spec.get("reference", self.reference)
            )
        else:
            changes.update(protocol=name, grids={} if SELECT[name] == "last" else self.grids)
        return dataclasses.replace(self, **changes)

    def run_config(self, method: str, **overrides: Any) -> RunConfig:
        """The run of ``method`` under this profile: shared fields, then ``hparams[method]``,
        then ``overrides`` (``None`` values ignored, so a notebook may pass all it has)."""
        from vptlib.runs.config import run_config

        # The profile's revision belongs to the profile's model: another --model gets its own default.
        model = overrides.get("model") or self.model
        revision = self.revision if model == self.model else None
        shared = {
            "data": self.data,
            "model": self.model,
            "revision": revision,
            "profile": self.profile,
            "out": self.runs,
            "seed": self.seed,
            "device": self.device,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "select": SELECT[self.protocol],
        }
        return run_config(method, self.hparams, shared, **overrides)


def as_profile(value: Profile | dict[str, Any]) -> Profile:
    """A :class:`Profile` from itself or from a dict of its fields (tests, notebooks)."""
    return value if isinstance(value, Profile) else Profile(**value)


def _file_types() -> dict[str, tuple[type, ...]]:
    """Each key a profile file may hold, with the YAML types it may have: read from the
    :class:`Profile` fields' annotations, so the types are written once (``dry_run`` is set by
    the environment, never by a file)."""
    out = {}
    for name, hint in typing.get_type_hints(Profile).items():
        if name == "dry_run":
            continue
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = [k for k in typing.get_args(hint) if k is not type(None)] if union else [hint]
        out[name] = tuple(typing.get_origin(k) or k for k in kinds)  # list[int] -> list
    return out


_TYPES = _file_types()


def profile_file(name_or_path: str | Path) -> Path:
    """A profile, everywhere a command takes one (``--profile``): a file, or the name of one in
    ``profiles/`` (``smoke`` is ``profiles/smoke.yaml``)."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix or len(path.parts) > 1:
        return path
    return REPO / "profiles" / f"{path}.yaml"


def load(path: str | Path, check_methods: bool = True) -> Profile:
    """Read and validate a profile; a :class:`UserError` names the first problem.

    ``check_methods=False`` skips the checks that import torch and the method registry
    (the Makefile's quick look-up of one key).
    """
    path = profile_file(path)
    if not path.is_file():
        names = [p.stem for p in sorted((REPO / "profiles").glob("*.yaml"))]
        raise UserError(
            f"profile {path} not found{did_you_mean(path.stem, names)}; choose PROFILE= one of: {', '.join(names)}"
        )
    try:
        raw = schema.safe_yaml(path)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"profile {path} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"profile {path} must be a mapping of keys to values, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_TYPES))
    if unknown:
        raise UserError(f"profile {path}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(_TYPES)}")
    missing = [k for k in ("profile", "model", "data") if k not in raw]
    if missing:
        raise UserError(f"profile {path}: missing key(s) {', '.join(missing)}")
    for key, value in raw.items():
        types = _TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise UserError(f"profile {path}: {key} must be a {want}, got {value!r}")
    prof = Profile(**raw)
    if check_methods:
        schema.check(prof, path)
    folders = backbone_folders(os.environ.get(BACKBONES_ENV, ""))
    prof = prof.with_backbones(folders) if folders else prof
    return dry_run(prof) if flag(DRY_RUN_ENV) else prof


DRY_RUN_ENV = "VPTLIB_DRY_RUN"
# make book BACKBONES="name=folder,...": local folders for the profile's backbones (offline,
# air-gapped), as MODEL= is for the main one; vptlib reads it here, as DRY_RUN above.
BACKBONES_ENV = "VPTLIB_BACKBONES"


def backbone_folders(text: str) -> dict[str, str]:
    """``"name=folder,name=folder"`` as a mapping; anything else is one :class:`UserError` line."""
    out = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise UserError(f"BACKBONES={text!r}: give name=folder pairs separated by commas, e.g. pubmedclip=models/x")
        if name.strip() in out:  # keeping the last would silently drop a folder the user gave
            raise UserError(f"BACKBONES={text!r} names {name.strip()} twice; give each backbone one folder")
        out[name.strip()] = folder.strip()
    return out


def dry_run(p: Profile) -> Profile:
    """The same study as a rehearsal: every run cut to one epoch, one seed and the first
    point of every grid and sweep axis, written under ``<runs>/<profile>-dry-run/``.

    It runs every page and every code path on the real model and data (a tuning grid
    of one point still trains without test and is completed afterwards), so what would
    break hours into a full build breaks in minutes; its numbers mean nothing, and
    every page says so.
    """
    from vptlib.methods import METHODS

    def cut(method: str, hp: dict[str, Any]) -> dict[str, Any]:
        if method not in METHODS:
            return dict(hp)
        # The options a method marks as costly (flag(..., rehearsal=)) are cut too.
        costly = {
            f.name: f.metadata["rehearsal"]
            for f in dataclasses.fields(METHODS[method].options)
            if f.metadata.get("rehearsal") is not None
        }
        cheap = {k: min(hp.get(k, v), v) for k, v in costly.items()}
        return {**hp, **cheap, "epochs": 1} if METHODS[method].trains else {**hp, **cheap}

    def cut_variants(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, spec in found.items():
            own = {m: cut(m, hp) for m, hp in spec.get("hparams", {}).items()}
            out[name] = {**spec, "hparams": own} if own else dict(spec)
        return out

    sweeps = {}
    for name, sweep in p.sweeps.items():
        sweeps[name] = {k: (v[:1] if isinstance(v, list) and k != "methods" else v) for k, v in sweep.items()}
    return dataclasses.replace(
        p,
        profile=f"{p.profile}-dry-run",
        dry_run=True,
        seeds=p.seeds[:1],
        tuning_seed=p.grid_seed,  # the grids' seed of the study it rehearses
        hparams={m: cut(m, hp) for m, hp in p.hparams.items()},
        grids={m: {axis: values[:1] for axis, values in axes.items()} for m, axes in p.grids.items()},
        sweeps=sweeps,
        backbones=cut_variants(p.backbones),
        protocols=cut_variants(p.protocols),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m vptlib.study.profile PATH KEY``: print one key of a profile (the Makefile's look-up)."""
    import sys

    args = argv if argv is not None else sys.argv[1:]
    try:
        path, key = args
        value = getattr(load(path, check_methods=False), key)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (AttributeError, TypeError, ValueError):
        print(
            f"error: usage: python -m vptlib.study.profile PATH KEY (a key of {', '.join([*_TYPES, 'sweep_methods'])})",
            file=sys.stderr,
        )
        return 2
    # The Makefile uses the value as a file name (a space is escaped for it: schema refuses the
    # characters make cannot escape), a list as words.
    print(" ".join(map(str, value)) if isinstance(value, list) else str(value).replace(" ", "\\ "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
