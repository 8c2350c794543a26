"""Build steps behind ``make book`` and ``make run``: preflight, data, notebook execution,
and the per-profile Jupyter Book config.

A profile is a YAML file in ``profiles/`` (:mod:`vptlib.profile`): the settings every
notebook of one book shares, plus how to obtain the data. Each notebook takes the
profile's path as its one papermill parameter (the experiment page also takes a method
and overrides) and never branches on the profile.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import warnings
from pathlib import Path
from typing import Any

import yaml

from . import atomic
from .errors import UserError

REPO = Path(__file__).resolve().parents[1]
SMOKE_BANNER = (
    "Smoke build: every number on these pages comes from a tiny model warmed up on synthetic phantoms, "
    "not from CLIP on brain MRI. They test the pipeline and say nothing about the methods."
)


def load_profile(path: str | Path) -> dict[str, Any]:
    """The validated profile (:func:`vptlib.profile.load`) as a plain dict."""
    from .profile import load

    return load(path).as_dict()


def _ways_forward(missing: str, model: str, revision: str | None, kaggle: str) -> str:
    from . import hub

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
    from .backbone import load_clip
    from .fetch import fetch
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
    from .fetch import fetch
    from .phantoms import write_phantoms
    from .prepare import PrepareOptions, prepare

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


def execute(template: str | Path, output: str | Path, profile_path: str | Path, params: dict[str, Any],
            title: str | None = None) -> Path:  # fmt: skip
    """Run a template notebook with papermill into ``output``, atomically, and title its page."""
    import nbformat
    import papermill as pm

    output = Path(output)
    check_params(template, params)
    load_profile(profile_path)  # a bad profile is one line here, not a failed notebook
    # Every template takes the profile's path and reads the profile itself (vptlib.profile).
    parameters = {"profile_path": str(profile_path), **params}
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"executing {output} ({', '.join(f'{k}={v}' for k, v in params.items())})", flush=True)
    env_before = os.environ.get("VPTLIB_STATIC")
    os.environ["VPTLIB_STATIC"] = "1"

    def write(tmp: Path) -> None:
        # Relative paths in profiles (data/, runs/, models/) are relative to where make runs.
        try:
            with warnings.catch_warnings():
                # The temporary name ends in .tmp (so no glob of the book picks it up); papermill
                # would warn about that once per page.
                warnings.filterwarnings("ignore", message="The specified file .* does not end in one of")
                pm.execute_notebook(str(template), str(tmp), parameters=parameters, cwd=os.getcwd(),
                                    kernel_name="python3", progress_bar=False, report_mode=False)  # fmt: skip
        except pm.PapermillExecutionError as exc:
            failed = output.with_suffix(".failed.ipynb")
            shutil.copyfile(tmp, failed)
            raise UserError(f"{template} failed for {params}: {exc.ename}: {exc.evalue} (see {failed})") from None
        nb = nbformat.read(tmp, as_version=4)
        # Progress bars rendered as ipywidgets leave widget state behind, which makes
        # myst-nb load widget JavaScript from a CDN; the static report needs none.
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:  # papermill's injected parameters: not part of the report
            tags = cell.metadata.setdefault("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
        if title:
            first = next(c for c in nb.cells if c.cell_type == "markdown")
            lines = first.source.splitlines()
            first.source = "\n".join([f"# {title}", *lines[1:]])
        nbformat.write(nb, str(tmp))

    try:
        atomic.atomic_write(output, write)  # group-readable like any file, and whole or not at all
    finally:
        if env_before is None:
            os.environ.pop("VPTLIB_STATIC", None)
        else:
            os.environ["VPTLIB_STATIC"] = env_before
    return output


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
    from .methods import METHODS

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
            raise UserError(f"{generated} holds the {built!r} build, not {profile_name!r}: rerun with "
                            f"PROFILE={built}, or build this profile first with make book PROFILE={profile_name}")  # fmt: skip
        print(f"profile changed to {profile_name}: clearing {generated}")
        shutil.rmtree(generated)
    generated.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        atomic.write_text(stamp, profile_name + "\n")


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def template_parameters(template: str | Path) -> set[str]:
    """The names a template's ``parameters`` cell defines: the only ones papermill may set."""
    import papermill as pm

    return set(pm.inspect_notebook(str(template)))


def check_params(template: str | Path, params: dict[str, Any]) -> None:
    """Refuse a parameter the template does not declare, before anything runs.

    papermill writes each name into the notebook as code, so an unchecked name is code
    injection (``-p 'import os; os.system(...)#' 1``); values are written as literals.
    """
    known = template_parameters(template)
    for name in params:
        if not _IDENTIFIER.match(name) or name not in known:
            raise UserError(f"unknown parameter {name!r} for {Path(template).name}; known: {', '.join(sorted(known))}")
    method = params.get("method")
    if method is not None:
        from .methods import METHODS

        if method not in METHODS:
            raise UserError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")


def parse_params(pairs: list[list[str]]) -> dict[str, Any]:
    """``-p KEY VALUE`` pairs, values parsed as YAML scalars like papermill does."""
    try:
        return {k: yaml.safe_load(v) for k, v in pairs}
    except yaml.YAMLError as exc:
        raise UserError(f"a -p value is not a YAML scalar: {str(exc).splitlines()[0]}") from None


def parse_args_string(args: str) -> dict[str, Any]:
    """``make run``'s ``ARGS="-p lr 0.5 -p prompt_tokens 10"``, split as a shell would, never run by one."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise UserError(f"ARGS={args!r}: {exc}") from None
    pairs = []
    while words:
        if len(words) < 3 or words[0] not in ("-p", "--parameters"):
            raise UserError(f"ARGS={args!r}: expected pairs like -p NAME VALUE")
        pairs.append([words[1], words[2]])
        words = words[3:]
    return parse_params(pairs)


def rerun(profile_name: str, method: str, args: str, generated: str | Path, model: str | None = None) -> Path:
    """``make run``: validate everything, check the build's profile, then execute one experiment page."""
    if not re.match(r"^[A-Za-z0-9_.-]+$", profile_name or ""):
        raise UserError(f"PROFILE={profile_name!r}: a profile name from profiles/")
    profile_path = REPO / "profiles" / f"{profile_name}.yaml"
    load_profile(profile_path)
    params = {"method": method, **parse_args_string(args)}
    if model:
        params["model"] = model
    template = REPO / "notebooks" / "experiment.ipynb"
    check_params(template, params)
    from .profile import load

    guard(load(profile_path).profile, generated, clear=False)
    from .methods import METHODS

    return execute(template, Path(generated) / "experiments" / f"{method}.ipynb", profile_path, params,
                   METHODS[method].title)  # fmt: skip
