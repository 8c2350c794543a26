"""The method registry is the one list of methods: the build files list exactly its methods."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from vptlib import bench, report
from vptlib.cli import build_parser
from vptlib.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


def test_makefile_asks_the_registry_and_lists_no_method():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vptlib.methods"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "METHODS := " + " ".join(METHODS)
    makefile = (ROOT / "Makefile").read_text()
    lists = [line for line in makefile.splitlines() if sum(m in re.findall(r"\w+", line) for m in METHODS) >= 3]
    assert not lists  # no second list of methods to keep in sync


def test_generated_toc_lists_every_experiment_page_in_order(tmp_path, monkeypatch):
    from vptlib.study import book

    toc = yaml.safe_load(book.write_toc(tmp_path / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    pages = [f.rsplit("/", 1)[1] for f in files if "/experiments/" in f]
    assert pages == list(METHODS)
    repo_toc = yaml.safe_load((ROOT / "_toc.yml").read_text())  # the checked-in one lists no method either
    assert not [m for m in METHODS if m in yaml.safe_dump(repo_toc)]
    # A method added to the registry appears without touching the toc.
    monkeypatch.setattr("vptlib.methods.METHODS", {**METHODS, "new_method": METHODS["linear"]})
    toc = yaml.safe_load(book.write_toc(tmp_path / "again.yml").read_text())
    assert "book/generated/experiments/new_method" in yaml.safe_dump(toc)


def test_report_bench_and_cli_read_the_registry():
    assert tuple(METHODS) == report.TITLES.order
    assert set(report.TITLES) == set(METHODS) and all(report.TITLES.values())
    assert set(bench.METHODS) == set(METHODS) - set(bench.SAME_COST)  # every method is measured or derived
    assert all(m in re.sub(r"\s+", " ", _help("run")) for m in METHODS)


def _help(command: str) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        build_parser().parse_args([command, "--help"])
    return buf.getvalue()


def test_a_new_methods_flags_pages_and_axes_come_from_its_module(monkeypatch, tmp_path):
    """What adding a method touches: its module and its registry entry. The flags, the toc, the
    profile's grid check and the sweep axes follow from them."""
    from dataclasses import dataclass

    import vptlib.methods as methods
    from vptlib.methods.base import TrainDefaults, flag
    from vptlib.study import book
    from vptlib.study.profile import Profile
    from vptlib.study.sweep import grid

    @dataclass
    class Options:
        depth: int = flag(3, "--toy-depth", "toy: how deep (default 3)")

    toy = methods.MethodSpec(methods.METHODS["linear"].build, Options, TrainDefaults(epochs=1, lr=0.1), "Toy")
    monkeypatch.setitem(methods.METHODS, "toy", toy)
    assert "--toy-depth" in _help("run") and "toy: how deep" in re.sub(r"\s+", " ", _help("run"))
    assert build_parser().parse_args(["run", "--method", "toy", "--data", "d", "--toy-depth", "0"]).depth == 0
    assert "book/generated/experiments/toy" in book.write_toc(tmp_path / "toc.yml").read_text()
    prof = Profile(
        profile="p",
        model="m",
        data=str(tmp_path),
        grids={"toy": {"depth": [1, 2]}},
        sweeps={"s": {"methods": ["toy", "linear"], "depth": [1, 2], "seeds": [0]}},
    )
    points = grid(prof, "s", check=False)
    assert sorted(p["depth"] for p, _ in points if p["method"] == "toy") == [1, 2]
    assert all("depth" not in p for p, _ in points if p["method"] == "linear")  # an option only toy has


def test_zero_is_a_value_not_an_unset_flag(tmp_path):
    from vptlib.cli import method_options

    args = build_parser().parse_args(["run", "--method", "vpt_deep", "--data", "d", "--prompt-tokens", "0"])
    assert method_options(args) == {"prompt_tokens": 0}
    args = build_parser().parse_args(["run", "--method", "linear", "--data", "d", "--through-backbone"])
    assert method_options(args) == {"through_backbone": True}
