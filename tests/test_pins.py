"""The pins and the package's requirements: requirements.txt is the lock, environment.yml
lists the same pins, and pyproject.toml names the same packages with loose bounds that the
pins satisfy, keeping every test, lint and book tool out of a plain ``pip install .``."""

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


def _project() -> dict:
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the venv's Python has it
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name.lower().replace("_", "-")


# What `pip install .` must never pull: the tools of the test suite, lint and the book.
NOT_AT_RUNTIME = {"pytest", "pytest-timeout", "ruff", "selenium", "pypdf", "statsmodels", "jupyter-book", "papermill"}


def test_runtime_requirements_are_loose_and_carry_no_tool():
    deps = _project()["dependencies"]
    assert deps, "pyproject.toml lists no runtime dependency"
    assert not [d for d in deps if "==" in d], "runtime dependencies are ranges; the pins live in requirements.txt"
    assert not {_name(d) for d in deps} & NOT_AT_RUNTIME


def test_every_pin_is_named_by_pyproject_once_and_satisfies_it():
    from packaging.requirements import Requirement

    project = _project()
    extras = project["optional-dependencies"]
    named = [Requirement(d) for d in project["dependencies"]]
    named += [Requirement(d) for group in extras.values() for d in group if not d.startswith("vptlib")]
    names = [r.name.lower().replace("_", "-") for r in named]
    assert len(names) == len(set(names)), "a package is named twice in pyproject.toml"
    pins = {k.replace("_", "-"): v for k, v in _requirements().items()}
    assert set(names) == set(pins), set(names) ^ set(pins)
    for r in named:
        assert r.specifier.contains(pins[r.name.lower().replace("_", "-")]), f"{r} excludes its pin"
    assert {"book", "test", "dev"} <= set(extras)
    in_extras = {_name(d) for g in extras.values() for d in g if not d.startswith("vptlib")}
    assert in_extras >= NOT_AT_RUNTIME


def test_a_plain_install_pulls_no_test_or_lint_tool():
    # The closure of the runtime requirements over the installed packages' own metadata:
    # what `pip install .` would bring, without the network.
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    seen, todo = set(), [_name(d) for d in _project()["dependencies"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for text in reqs:
            r = Requirement(text)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name.lower().replace("_", "-"))
    assert not seen & (NOT_AT_RUNTIME | {"ipykernel", "sphinx"}), seen & NOT_AT_RUNTIME


def test_make_installs_the_lock_and_the_extras_under_it():
    text = (ROOT / "Makefile").read_text()
    assert "pip install -q --no-compile -r requirements.txt" in text
    assert "-m compileall -q -j 0" in text  # compiled ahead, on every core (PYTHONDONTWRITEBYTECODE)
    assert "pip install -q --no-deps --no-build-isolation -e ." in text  # the lock holds every extra
    assert 'pip install -q -c requirements.txt -e ".[dev]"' in text  # where the venv cannot build it


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
