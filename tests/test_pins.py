"""environment.yml (conda) and requirements.txt (pip) must list exactly the same pins."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[name.lower()] = version
    return pins


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {n.lower(): v for n, _, v in (s.partition("==") for s in pip)}


def test_environment_yml_matches_requirements():
    assert _environment() == _requirements()


def test_key_pins():
    pins = _requirements()
    assert pins["torch"] == "2.13.0"
    assert pins["transformers"].startswith("5.")
    assert int(pins["jupyter-book"].split(".")[0]) < 2, "Jupyter Book 2 cannot build offline"
    assert "torchvision" not in pins, "PyPI's torchvision does not import beside torch 2.13.0"


def test_pyproject_reads_requirements():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dependencies = { file = ["requirements.txt"] }' in text


def test_every_subpackage_is_packaged():
    # A fixed package list once left out vptlib.report and vptlib.bench: the editable install
    # hid it, and a plain `pip install .` would have shipped a vptlib without them.
    import fnmatch

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the venv's Python has it
    root = ROOT
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(root).parts) for p in (root / "vptlib").rglob("__init__.py")}
    listed = tool.get("packages")
    if isinstance(listed, list):
        shipped = set(listed)
    else:
        include = listed["find"]["include"]
        shipped = {p for p in packages if any(fnmatch.fnmatch(p, pat) for pat in include)}
    assert {"vptlib.bench", "vptlib.report", "vptlib.methods"} <= packages
    assert packages <= shipped, packages - shipped
