"""The method registry is the one list of methods: the build files list exactly its methods."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from vptlib import bench, report
from vptlib.cli import build_parser
from vptlib.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


def test_makefile_asks_the_registry_and_lists_no_method():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vptlib.methods"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "METHODS := " + " ".join(METHODS)
    makefile = (ROOT / "Makefile").read_text()
    lists = [line for line in makefile.splitlines() if sum(m in re.findall(r"\w+", line) for m in METHODS) >= 3]
    assert not lists  # no second list of methods to keep in sync


def test_generated_toc_lists_every_experiment_page_in_order(tmp_path, monkeypatch):
    from vptlib import book

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
    assert tuple(METHODS) == report.METHOD_ORDER
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
