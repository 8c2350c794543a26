"""Build steps behind ``make book`` and ``make run``: preflight, data, notebook execution,
and the per-profile Jupyter Book config.

A profile is a YAML file in ``profiles/`` (:mod:`vptlib.study.profile`): the settings every
notebook of one book shares, plus how to obtain the data. Each notebook takes the
profile's path as its one papermill parameter (the experiment page also takes a method
and overrides) and never branches on the profile.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from vptlib import REPO, atomic
from vptlib.errors import UserError

SMOKE_BANNER = (
    "Smoke build: every number on these pages comes from a tiny model warmed up on synthetic phantoms, "
    "not from CLIP on brain MRI. They test the pipeline and say nothing about the methods."
)


def load_profile(path: str | Path) -> dict[str, Any]:
    """The validated profile (:func:`vptlib.study.profile.load`) as a plain dict."""
    from .profile import load

    return load(path).as_dict()


def _ways_forward(missing: str, model: str, revision: str | None, kaggle: str) -> str:
    from vptlib.models import hub

    if hub.is_hub_id(model):
        rev = revision or hub.PINNED.get(model, "main")
        folder = hub.default_folder(model)
        fetch_model, use_model = f"`{hub.fetch_command(model, rev)}` and ", f" MODEL={folder}"
    else:
        fetch_model = use_model = ""
    return (
        f"{missing}\n"
        "Three ways forward:\n"
        f"  1. air-gapped: on a machine with a network run {fetch_model}`vptlib data fetch --dest {kaggle}`,\n"
        f"     copy models/ and data/ here, then: make book{use_model}\n"
        "  2. point to local folders: make book DATA=/path/to/kaggle-brain-mri MODEL=/path/to/clip-vit-base-patch32;\n"
        "  3. build the offline smoke report instead: make book PROFILE=smoke"
    )


def preflight(profile_path: str | Path, data: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Check, within seconds, that the model and the data can be had; before any training."""
    from vptlib.data.fetch import fetch
    from vptlib.models.backbone import load_clip

    from .profile import load

    prof = load(profile_path).with_model(model)
    profile = prof.as_dict()
    problems = []
    if not (Path(profile["data"]) / "manifest.csv").is_file():
        source = profile.get("source", {})
        if "kaggle" in source:
            try:
                if data:
                    _check_source(data)
                else:
                    fetch(source["kaggle"], **_handle(source))
            except UserError as exc:
                problems.append("data: " + " ".join(line.strip() for line in str(exc).splitlines()))
    try:
        load_clip(prof.model, revision=prof.revision)
    except UserError as exc:
        problems.append(f"model: {exc}")
    if problems:
        kaggle = prof.source.get("kaggle", "data/kaggle-brain-mri")
        raise UserError(
            _ways_forward("cannot build the full report: " + "; ".join(problems), prof.model, prof.revision, kaggle)
        )
    return profile


def _handle(source: dict[str, Any]) -> dict[str, str]:
    return {"handle": source["kaggle_handle"]} if "kaggle_handle" in source else {}


def _check_source(data: str) -> None:
    if not (Path(data) / "Training").is_dir():
        raise UserError(f"DATA={data} has no Training/ folder")


def prepare_data(profile_path: str | Path, data: str | None = None) -> Path:
    """Create the profile's prepared data folder (phantoms for smoke, Kaggle for full)."""
    from vptlib.data.fetch import fetch
    from vptlib.data.phantoms import write_phantoms
    from vptlib.data.prepare import PrepareOptions, prepare

    profile = load_profile(profile_path)
    source = profile["source"]
    out = Path(profile["data"])
    if "phantoms" in source:
        raw = out.parent / f"{out.name}-raw"
        write_phantoms(raw, **source["phantoms"])
    else:
        raw = Path(data) if data else fetch(source["kaggle"], **_handle(source))
    res = prepare(PrepareOptions(raw, out, **source.get("prepare", {})))
    print(res.table)
    return out


DRY_RUN_BANNER = (
    "Dry run: every run was cut to one epoch, one seed and the first point of every grid. These pages "
    "rehearse the build on its model and data; their numbers say nothing about the methods."
)


def write_config(profile_path: str | Path, out: str | Path) -> Path:
    """``_config.yml`` plus, for the smoke profile and for dry runs, a banner on every page."""
    profile = load_profile(profile_path)
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    banners = [SMOKE_BANNER] * (profile.get("banner") == "smoke") + [DRY_RUN_BANNER] * bool(profile.get("dry_run"))
    if banners:
        config.setdefault("html", {})["announcement"] = " ".join(banners)
    return atomic.write_text(out, yaml.safe_dump(config, sort_keys=False))


def write_toc(out: str | Path) -> Path:
    """``_toc.yml`` with the Experiments part listing one page per method in the registry's order.

    The repository's ``_toc.yml`` globs the experiment pages (valid on its own, in
    alphabetical order); the build uses this generated copy, so a new method needs no edit.
    """
    from vptlib.methods import METHODS

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p.get("caption") == "Experiments")
    part["chapters"] = [{"file": f"book/generated/experiments/{m}"} for m in METHODS]
    return atomic.write_text(out, yaml.safe_dump(toc, sort_keys=False))


def guard(profile_name: str, generated: str | Path, clear: bool = True) -> None:
    """Outputs of another profile must never appear in this build.

    ``make book`` (``clear=True``, after its preflight) clears pages it stamped with
    another profile; ``make run`` (``clear=False``) refuses instead, so a typo or a
    forgotten ``PROFILE=`` never wipes a finished build. A folder without vptlib's
    stamp is never deleted.
    """
    generated = Path(generated)
    stamp = generated / "PROFILE"
    built = stamp.read_text().strip() if stamp.is_file() else None
    if built is None and generated.is_dir() and any(p.name != "PROFILE" for p in generated.iterdir()):
        raise UserError(f"{generated} holds files without vptlib's PROFILE stamp; move them away first")
    if built is not None and built != profile_name:
        if not clear:
            raise UserError(
                f"{generated} holds the {built!r} build, not {profile_name!r}: rerun with "
                f"PROFILE={built}, or build this profile first with make book PROFILE={profile_name}"
            )
        print(f"profile changed to {profile_name}: clearing {generated}")
        shutil.rmtree(generated)
    generated.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        atomic.write_text(stamp, profile_name + "\n")
