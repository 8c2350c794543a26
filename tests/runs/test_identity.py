"""A run's identity is the code that decides its numbers: data, models, methods, runs.

Editing the report, the bench, the study's orchestration or the CLI leaves every run's code
hash as it was, so finished runs are reused; editing the training code changes it.
(tests/test_book.py shows the same through `make book`.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vptlib.runs import provenance

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "vptlib"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE", copy)
    return copy


@pytest.mark.parametrize(
    "edited", ["report/results.py", "report/__init__.py", "bench/timing.py", "cli/app.py", "study/book.py", "errors.py"]
)
def test_editing_what_renders_or_orchestrates_keeps_the_code_hash(package_copy, edited):
    before = provenance.code_hash()
    with (package_copy / edited).open("a") as f:
        f.write("\n\ndef _a_new_figure_colour():\n    return 'tab:red'\n")
    assert provenance.code_hash() == before


@pytest.mark.parametrize(
    "edited", ["runs/training.py", "methods/visual_prompt.py", "data/dataset.py", "models/backbone.py", "selection.py"]
)
def test_editing_what_decides_the_numbers_changes_the_code_hash(package_copy, edited):
    before = provenance.code_hash()
    with (package_copy / edited).open("a") as f:
        f.write("\n# a change\n")
    assert provenance.code_hash() != before


def test_a_new_module_in_an_identity_package_joins_the_hash(package_copy):
    before = provenance.code_hash()
    (package_copy / "methods" / "new_method.py").write_text("X = 1\n")
    assert provenance.code_hash() != before


def test_the_makefile_reexecutes_pages_on_exactly_that_code():
    """RUN_SRC in the Makefile lists the files of the code hash, and nothing else."""
    probe = "print-run-src: ; @echo $(RUN_SRC)\n"
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "print-run-src", "PROFILE=smoke"],
        input=probe,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert sorted(out) == sorted(f"vptlib/{p.as_posix()}" for p in provenance.identity_files())
