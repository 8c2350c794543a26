"""Build steps behind ``make book`` and ``make run``: preflight, data, notebook execution,
and the per-profile Jupyter Book config.

A profile is a YAML file in ``profiles/``: papermill parameters shared by every
notebook, plus how to obtain the data. Notebooks never branch on the profile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

REPO = Path(__file__).resolve().parents[1]
SMOKE_BANNER = (
    "Smoke build: every number on these pages comes from a tiny model warmed up on synthetic phantoms, "
    "not from CLIP on brain MRI. They test the pipeline and say nothing about the methods."
)


def load_profile(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        choices = ", ".join(p.stem for p in sorted((REPO / "profiles").glob("*.yaml")))
        raise UserError(f"profile {path} not found; choose PROFILE= one of: {choices}")
    return yaml.safe_load(path.read_text())


def notebook_parameters(profile: dict[str, Any]) -> dict[str, Any]:
    """What papermill injects: everything except how the data is obtained."""
    return {k: v for k, v in profile.items() if k not in ("source", "banner")}


def _ways_forward(missing: str) -> str:
    return (
        f"{missing}\n"
        "Three ways forward:\n"
        "  1. pre-download on a machine with a network: `hf download openai/clip-vit-base-patch32` and\n"
        "     `vptlib data fetch` (Kaggle), then copy the Hugging Face cache and data/ here;\n"
        "  2. point to local folders: make book DATA=/path/to/kaggle-brain-mri MODEL=/path/to/clip-vit-base-patch32;\n"
        "  3. build the offline smoke report instead: make book PROFILE=smoke"
    )


def preflight(profile_path: str | Path, data: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Check, within seconds, that the model and the data can be had; before any training."""
    from .backbone import load_clip
    from .fetch import fetch

    profile = load_profile(profile_path)
    if model:
        profile["model"] = model
    problems = []
    if not (Path(profile["data"]) / "manifest.csv").is_file():
        source = profile.get("source", {})
        if "kaggle" in source:
            try:
                if data:
                    _check_source(data)
                else:
                    fetch(source["kaggle"])
            except UserError as exc:
                problems.append(f"data: {str(exc).splitlines()[0]}")
    try:
        load_clip(profile["model"])
    except UserError as exc:
        problems.append(f"model: {exc}")
    if problems:
        raise UserError(_ways_forward("cannot build the full report: " + "; ".join(problems)))
    return profile


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
        raw = Path(data) if data else fetch(source["kaggle"])
    res = prepare(PrepareOptions(raw, out, **source.get("prepare", {})))
    print(res.table)
    return out


def execute(template: str | Path, output: str | Path, profile_path: str | Path, params: dict[str, Any],
            title: str | None = None) -> Path:  # fmt: skip
    """Run a template notebook with papermill into ``output``, atomically, and title its page."""
    import nbformat
    import papermill as pm

    output = Path(output)
    parameters = {**notebook_parameters(load_profile(profile_path)), **params}
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"executing {output} ({', '.join(f'{k}={v}' for k, v in params.items())})", flush=True)
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=output.parent, prefix=f".{output.stem}.")
    os.close(fd)
    env_before = os.environ.get("VPTLIB_STATIC")
    os.environ["VPTLIB_STATIC"] = "1"
    try:
        # Relative paths in profiles (data/, runs/, models/) are relative to where make runs.
        pm.execute_notebook(str(template), tmp, parameters=parameters, cwd=os.getcwd(), kernel_name="python3",
                            progress_bar=False, report_mode=False)  # fmt: skip
        nb = nbformat.read(tmp, as_version=4)
        # Progress bars rendered as ipywidgets leave widget state behind, which makes
        # myst-nb load widget JavaScript from a CDN; the static report needs none.
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:  # papermill's injected parameters: collapsed like every code cell
            tags = cell.metadata.setdefault("tags", [])
            if "injected-parameters" in tags and "hide-input" not in tags:
                tags.append("hide-input")
        if title:
            first = next(c for c in nb.cells if c.cell_type == "markdown")
            lines = first.source.splitlines()
            first.source = "\n".join([f"# {title}", *lines[1:]])
        nbformat.write(nb, tmp)
        os.replace(tmp, output)
    except pm.PapermillExecutionError as exc:
        failed = output.with_suffix(".failed.ipynb")
        shutil.move(tmp, failed)
        raise UserError(f"{template} failed for {params}: {exc.ename}: {exc.evalue} (see {failed})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
        if env_before is None:
            os.environ.pop("VPTLIB_STATIC", None)
        else:
            os.environ["VPTLIB_STATIC"] = env_before
    return output


def write_config(profile_path: str | Path, out: str | Path) -> Path:
    """``_config.yml`` plus, for the smoke profile, a banner on every page."""
    profile = load_profile(profile_path)
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    if profile.get("banner") == "smoke":
        config.setdefault("html", {})["announcement"] = SMOKE_BANNER
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def guard(profile_name: str, generated: str | Path) -> None:
    """Outputs of another profile must never appear in this build: clear them."""
    generated = Path(generated)
    stamp = generated / "PROFILE"
    if stamp.is_file() and stamp.read_text().strip() != profile_name:
        print(f"profile changed to {profile_name}: clearing {generated}")
        shutil.rmtree(generated)
    generated.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        stamp.write_text(profile_name + "\n")


def parse_params(pairs: list[list[str]]) -> dict[str, Any]:
    """``-p KEY VALUE`` pairs, values parsed as YAML scalars like papermill does."""
    return {k: yaml.safe_load(v) for k, v in pairs}
