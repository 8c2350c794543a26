"""The method registry is the one list of methods: the build files list exactly its methods."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from vptlib import bench, report
from vptlib.cli import build_parser
from vptlib.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


def test_makefile_lists_the_registry_in_order():
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("METHODS :="))
    assert line.split(":=")[1].split() == list(METHODS)


def test_toc_lists_every_experiment_page_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    pages = [f.rsplit("/", 1)[1] for f in files if "/experiments/" in f]
    assert pages == list(METHODS)


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
