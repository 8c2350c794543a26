"""Each page's vptlib files, read statically: a report module's edit re-executes the pages
that use it, never a page that does not, and never leaves a page that does stale."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from vptlib import REPO
from vptlib.study import page_sources

TEMPLATES = sorted((REPO / "notebooks").glob("*.ipynb"))


def _report_modules(template: Path) -> set[str]:
    return {Path(p).stem for p in page_sources.page_sources(template) if p.startswith("vptlib/report/")}


def test_a_report_module_feeds_only_the_pages_that_call_it():
    assert {"experiment", "examples", "style"} <= _report_modules(REPO / "notebooks" / "experiment.ipynb")
    assert "results" not in _report_modules(REPO / "notebooks" / "experiment.ipynb")
    assert "experiment" not in _report_modules(REPO / "notebooks" / "results.ipynb")
    assert "results" in _report_modules(REPO / "notebooks" / "results.ipynb")
    assert "dataset" not in _report_modules(REPO / "notebooks" / "curves.ipynb")
    users = [t.stem for t in TEMPLATES if "vptlib/report/results.py" in page_sources.page_sources(t)]
    assert "results" in users and len(users) < len(TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.stem)
def test_every_name_a_template_calls_resolves_to_its_module(template):
    """``report.x`` must resolve to the module defining x: a name left on the package would
    hide its module from the page's sources."""
    cells = json.loads(template.read_text())["cells"]
    tree = ast.parse("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
    names = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "report"
    }
    for name in names - {"setup"}:  # setup = style.setup, reached through the package's own use of style
        module = page_sources._resolve("vptlib.report", name)
        assert module != "vptlib.report", name
        file = page_sources.module_file(module)
        assert file.name == f"{name}.py" or name in file.read_text(), (name, module)
    assert "vptlib/report/style.py" in page_sources.page_sources(template)  # report.setup()


def test_lazy_imports_count_and_the_run_code_is_reached():
    """An import inside a function counts (what a page reaches at run time is a subset of
    what is listed); the experiment page reaches the code that trains."""
    files = page_sources.page_sources(REPO / "notebooks" / "experiment.ipynb")
    assert "vptlib/runs/engine.py" in files and "vptlib/methods/visual_prompt.py" in files
    assert "vptlib/study/overrides.py" in files  # its note, imported by the template
    assert all((REPO / f).is_file() for f in files)


def test_the_makefile_fragment_names_every_template(tmp_path):
    out = tmp_path / "pages.mk"
    assert page_sources.main([str(out), *map(str, TEMPLATES)]) == 0
    text = out.read_text()
    for t in TEMPLATES:
        assert f"PAGE_SRC_{t.stem} := " in text
    makefile = (REPO / "Makefile").read_text()
    for t in TEMPLATES:
        assert f"$(PAGE_SRC_{t.stem})" in makefile, t.stem  # every page's rule uses its own list
