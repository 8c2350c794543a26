"""Build steps behind ``make book`` and ``make run``: preflight, data, notebook execution,
and the per-profile Jupyter Book config.

A profile is a YAML file in ``profiles/`` (:mod:`vptlib.study.profile`): the settings every
notebook of one book shares, plus how to obtain the data. Each notebook takes the
profile's path as its one papermill parameter (the experiment page also takes a method
and overrides) and never branches on the profile.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vptlib import REPO, atomic, locks
from vptlib.errors import UserError
from vptlib.paths import inside

if TYPE_CHECKING:
    from .profile import Profile

SMOKE_BANNER = (
    "Smoke build: every number on these pages comes from a tiny model warmed up on synthetic phantoms, "
    "not from CLIP on brain MRI. They test the pipeline and say nothing about the methods."
)


def load_profile(path: str | Path, check_methods: bool = True) -> Profile:
    """The build's profile, validated (one :class:`UserError` line on a bad one)."""
    from .profile import load

    return load(path, check_methods)


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


def _listed(head: str, problems: list[str]) -> str:
    """``head`` and one bullet per problem, each kept whole: a problem's own instructions
    (the command lines after "then run:") stay on their lines, indented under it."""
    lines = [head]
    for problem in problems:
        first, *rest = problem.splitlines()
        lines += [f"  - {first}", *(f"    {line}" for line in rest)]
    return "\n".join(lines)


def preflight(
    profile_path: str | Path, data: str | None = None, model: str | None = None, stamp: str | Path | None = None
) -> Profile:
    """Check, within seconds, that the model and the data can be had; before any training.

    ``stamp``: a file that holds the identity of the build's inputs (:func:`inputs_identity`),
    rewritten only when it changed. The pages that train depend on it in the Makefile, so
    ``make book MODEL=<another>`` or a toggled ``DRY_RUN`` re-executes them instead of
    showing the earlier model's results under the new name.
    """
    from concurrent.futures import ThreadPoolExecutor

    from vptlib.data.fetch import fetch
    from vptlib.models.backbone import load_clip

    from .profile import load

    prof = load(profile_path).with_model(model)

    def get_data() -> None:
        if not (Path(prof.data) / "manifest.csv").is_file():
            if data:  # DATA= replaces any profile's source, phantoms included
                _check_source(data)
            elif "kaggle" in prof.source:
                fetch(prof.source["kaggle"], **_handle(prof.source))

    # The data, the model and every backbone are asked for at once: offline, the build stops
    # after the slowest timeout, not after their sum.
    jobs = {"data": get_data, "model": lambda: load_clip(prof.model, revision=prof.revision)}
    for name, spec in prof.backbones.items():
        jobs[f"backbone {name}"] = lambda spec=spec: load_clip(spec["model"], revision=spec.get("revision"))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {what: pool.submit(job) for what, job in jobs.items()}
    problems, got = [], {}
    for what, future in futures.items():
        try:
            got[what] = future.result()
        except UserError as exc:
            if what.startswith("backbone "):  # its own route (BACKBONES=), not the main model's (MODEL=)
                name = what.removeprefix("backbone ")
                why = str(exc).split(" Air-gapped route:")[0]
                problems.append(f"{what}: {why}\n{_backbone_way(name, prof.backbones[name])}")
            else:
                problems.append(f"{what}: {exc}")
    clip = got.get("model")
    backbones = {
        what.removeprefix("backbone "): c.source.record() for what, c in got.items() if what.startswith("backbone ")
    }
    if problems:
        kaggle = prof.source.get("kaggle", "data/kaggle-brain-mri")
        raise UserError(
            _ways_forward(_listed("cannot build the full report:", problems), prof.model, prof.revision, kaggle)
        )
    if stamp is not None:
        identity = {**inputs_identity(prof, clip), "backbones": backbones}
        write_if_changed(Path(stamp), json.dumps(identity, indent=2, sort_keys=True) + "\n")
    return prof


def _backbone_way(name: str, spec: dict[str, Any]) -> str:
    """The route that works for one backbone: fetch it where there is a network, then point to it."""
    from vptlib.models import hub

    model = spec["model"]
    if not hub.is_hub_id(model):
        return f"give the backbone a folder that holds it: make book BACKBONES={name}=/path/to/its/folder"
    rev = spec.get("revision") or hub.PINNED.get(model, "main")
    return (
        f"on a machine with a network run `{hub.fetch_command(model, rev)}`, copy the folder here, then: "
        f"make book BACKBONES={name}={hub.default_folder(model)}"
    )


def inputs_identity(prof, clip) -> dict[str, Any]:
    """What the pages of a build were made from, besides code and profile (make tracks those):
    the model (where, which commit, its weight files' sizes and times), the data folder and
    whether this is a dry run."""
    from vptlib.models.backbone import model_signature

    return {
        "profile": prof.profile,
        "dry_run": prof.dry_run,
        "model": prof.model,
        "model_source": clip.source.record(),
        "model_signature": model_signature(prof.model),
        "data": str(Path(prof.data).resolve()),
    }


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless ``path`` holds it already (its time then stays, for make)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic.write_text(path, text)
    return True


def _handle(source: dict[str, Any]) -> dict[str, str]:
    return {"handle": source["kaggle_handle"]} if "kaggle_handle" in source else {}


def _check_source(data: str) -> Path:
    if not (Path(data) / "Training").is_dir():
        raise UserError(f"DATA={data} has no Training/ folder")
    return Path(data)


def prepare_data(profile_path: str | Path, data: str | None = None) -> Path:
    """The profile's prepared data, from ``data`` (DATA=) or its own source (phantoms, Kaggle)."""
    from vptlib.data.fetch import fetch
    from vptlib.data.phantoms import write_phantoms
    from vptlib.data.prepare import PrepareOptions, prepare

    # Without the method checks: they read the model's folder, which the smoke build warms
    # up beside this step (the data need only the profile's source and split settings).
    profile = load_profile(profile_path, check_methods=False)
    source, out = profile.source, Path(profile.data)
    if data:
        raw = _check_source(data)
    elif "phantoms" in source:
        raw = out.parent / f"{out.name}-raw"
        write_phantoms(raw, **source["phantoms"])
    else:
        raw = fetch(source["kaggle"], **_handle(source))
    res = prepare(PrepareOptions(raw, out, **source.get("prepare", {})))
    print(res.table)
    return out


DRY_RUN_BANNER = (
    "Dry run: every run was cut to one epoch, one seed and the first point of every grid. These pages "
    "rehearse the build on its model and data; their numbers say nothing about the methods."
)


BANNER = "BANNER"  # the build's banner text, beside its pages (empty: none); vptlib.study.banner shows it


def banner_text(profile_path: str | Path) -> str:
    """What every page of this profile's book says first: the smoke and dry-run warnings, or ""."""
    profile, data = load_profile(profile_path), os.environ.get("DATA")  # DATA= replaces the phantoms
    real = data and "phantoms" in profile.source
    smoke = SMOKE_BANNER + (f" Its images are real, from {data} (DATA=)." if real else "")
    banners = [smoke] * (profile.banner == "smoke") + [DRY_RUN_BANNER] * profile.dry_run
    return " ".join(banners)


def write_banner(profile_path: str | Path, generated: str | Path) -> Path:
    """Write :func:`banner_text` beside the generated pages, where the book's Sphinx extension
    (:mod:`vptlib.study.banner`) reads it: the banner travels with its pages, into a plain
    ``jupyter-book build .``, the HTML and every page of the PDF."""
    path = atomic.write_text(Path(generated) / BANNER, banner_text(profile_path) + "\n")
    record_output(path)
    return path


FACTS = "FACTS.json"  # what the static pages say of this build (vptlib.study.banner reads it)


def book_facts(prof: Profile) -> dict[str, str]:
    """What the static pages (intro, discussion) state about this build, from its profile and its
    data, as MyST substitutions: the model, the data's source, the split sizes and what one test
    image is worth. A smoke build's pages then never claim the real study's sizes or model."""
    from vptlib.data.manifest import MANIFEST, read_manifest
    from vptlib.data.phantoms import synthetic
    from vptlib.models import hub

    counts: dict[str, int] = {}
    if (Path(prof.data) / MANIFEST).is_file():  # the images the runs use, as they read them
        counts = read_manifest(prof.data)["split"].value_counts().to_dict()
    train, val, test = counts.get("train", 0), counts.get("val", 0), counts.get("test", 0)
    if prof.banner == "smoke":
        model = f"a tiny CLIP warmed up on synthetic phantoms (`{prof.model}`), standing in for CLIP ViT-B/32"
    elif prof.model == hub.DEFAULT_MODEL:
        model = f"CLIP ViT-B/32 (`{prof.model}`)"
    else:
        model = f"the CLIP model `{prof.model}`"
    kaggle = 'the public Kaggle "Brain Tumor MRI Dataset"'
    data = (
        f"synthetic phantoms in the layout of {kaggle}" if synthetic(prof.data) else f"a stratified subset of {kaggle}"
    )
    facts = {"study_model": model, "study_data": data}
    if test and train:  # sizes only from prepared data: never a count of 0, never the profile's intent
        from vptlib.runs.metrics import wilson_ci

        low, high = wilson_ci(0.9, test)
        facts |= {
            "train_images": f"{train + val:,}",
            "val_share": f"{val / (train + val):.0%}",
            "test_images": f"{test:,}",
            "one_test_image": f"about {100 / test:.2g} percentage points",
            "ci_near_90": f"{100 * low:.1f} to {100 * high:.1f}%",
        }
    return facts


def write_facts(profile_path: str | Path, generated: str | Path, model: str | None = None) -> Path:
    """Write :func:`book_facts` beside the generated pages, for the Sphinx extension."""
    prof = load_profile(profile_path, check_methods=False).with_model(model)
    path = atomic.write_text(Path(generated) / FACTS, json.dumps(book_facts(prof), indent=1) + "\n")
    record_output(path)
    return path


def write_toc(out: str | Path, methods: list[str] | None = None) -> Path:
    """``_toc.yml`` with the Experiments part listing one page per method in the registry's order.

    The repository's ``_toc.yml`` globs the experiment pages (valid on its own, in
    alphabetical order); the build uses this generated copy, so a new method needs no edit.
    """
    if methods is None:  # the registry (imports torch); the CLI passes run_flags.json's list
        from vptlib.methods import METHODS

        methods = list(METHODS)
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p.get("caption") == "Experiments")
    part["chapters"] = [{"file": f"book/generated/experiments/{m}"} for m in methods]
    return atomic.write_text(out, yaml.safe_dump(toc, sort_keys=False))


STAMP = "PROFILE"  # the build's profile, written by guard
OUTPUTS = ".vptlib-outputs"  # every page vptlib wrote into the folder, one relative path a line
OWN = (OUTPUTS, STAMP, locks.LOCK_NAME)  # the folder's own bookkeeping, never a page


def guard(profile_name: str, generated: str | Path, clear: bool = True) -> None:
    """Outputs of another profile must never appear in this build.

    ``make book`` (``clear=True``, after its preflight) removes the pages it wrote for
    another profile; ``make run`` (``clear=False``) refuses instead, so a typo or a
    forgotten ``PROFILE=`` never wipes a finished build. Only files listed in the folder's
    :data:`OUTPUTS` are ever deleted: a file of yours beside them stays.
    """
    generated = Path(generated)
    stamp = generated / STAMP
    built = stamp.read_text().strip() if stamp.is_file() else None
    if built is None and generated.is_dir() and any(p.name not in OWN for p in generated.iterdir()):
        raise UserError(f"{generated} holds files without vptlib's {STAMP} stamp; move them away first")
    if built is not None and built != profile_name:
        if not clear:
            raise UserError(
                f"{generated} holds the {built!r} build, not {profile_name!r}: rerun with "
                f"PROFILE={built}, or build this profile first with make book PROFILE={profile_name}"
            )
        print(f"profile changed to {profile_name}: removing the {built!r} pages from {generated}")
        clean(generated)
    generated.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        atomic.write_text(generated / OUTPUTS, "")  # a new build: nothing in it is vptlib's yet
        atomic.write_text(stamp, profile_name + "\n")


def record_output(path: str | Path) -> None:
    """Note that vptlib wrote ``path``, in the :data:`OUTPUTS` of the stamped folder above it."""
    path = Path(path).resolve()
    root = next((d for d in path.parents if (d / STAMP).is_file()), None)
    if root is None:
        return
    rel = path.relative_to(root).as_posix()
    # Pages execute in parallel (make -j): the list is read and rewritten by one at a time.
    with locks.exclusive(root, f"the list of pages in {root}", wait=True):
        listed = _outputs(root)
        if rel not in listed or not (root / OUTPUTS).is_file():
            atomic.write_text(root / OUTPUTS, "".join(f"{p}\n" for p in sorted({*listed, rel})))


def _outputs(root: Path) -> set[str]:
    f = root / OUTPUTS
    if f.is_file():
        return {line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()}
    # A build stamped before the list existed: its pages are the notebooks vptlib executed there.
    return {p.relative_to(root).as_posix() for p in root.rglob("*.ipynb")} if (root / STAMP).is_file() else set()


def clean(generated: str | Path) -> list[Path]:
    """Delete the pages vptlib wrote into ``generated`` (its :data:`OUTPUTS`) and its stamp;
    returns what is kept: files vptlib did not write."""
    generated = Path(generated)
    if not generated.is_dir():
        return []
    for rel in _outputs(generated):
        try:
            target = inside(generated, rel, f"{generated / OUTPUTS}: entry")
        except UserError:
            continue  # an entry that leads outside is never followed
        if target.is_file() and not target.is_symlink():
            target.unlink()
    for name in OWN:
        (generated / name).unlink(missing_ok=True)
    for d in sorted((p for p in generated.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()
    kept = sorted(p for p in generated.rglob("*") if p.is_file())
    if kept:
        print(f"kept {len(kept)} file(s) vptlib did not write in {generated}: {', '.join(map(str, kept[:5]))}")
    elif not any(generated.iterdir()):
        generated.rmdir()
    return kept
