"""The notebook templates' figures: each in a cell of its own with a caption and a name, so the
book numbers every figure ("Fig. N") and no page repeats a label."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from vptlib.study.notebooks import unique_figure_names

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((REPO / "notebooks").glob("*.ipynb"))
# What draws a figure in a template cell: the report's plot_* functions, its image grids,
# or matplotlib's show.
DRAWS = re.compile(r"report\.(plot_\w+|sample_grid|class_distribution|nearest_pairs|misclassified)\(|plt\.show\(")


def _cells(template: Path):
    return [c for c in json.loads(template.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_every_figure_cell_has_a_caption_and_shows_nothing_else(template):
    names = []
    for cell in _cells(template):
        source = "".join(cell["source"])
        figure = cell["metadata"].get("mystnb", {}).get("figure")
        if DRAWS.search(source):
            assert figure and figure.get("caption") and figure.get("name"), (template.name, source)
            # One output only: every output of a captioned cell becomes a figure with that name.
            assert "display(" not in source and len(DRAWS.findall(source)) <= 2, (template.name, source)
            assert not re.search(r"\n\s*report\.\w+_table\(", source), (template.name, source)
            names.append(figure["name"])
        else:
            assert not figure, (template.name, source)
    assert len(names) == len(set(names)), template.name


def test_pages_from_one_template_get_names_of_their_own():
    nb = nbformat.read(str(REPO / "notebooks" / "experiment.ipynb"), as_version=4)
    unique_figure_names(nb, "vpt_deep")
    unique_figure_names(nb, "vpt_deep")  # idempotent
    names = [c.metadata["mystnb"]["figure"]["name"] for c in nb.cells if "mystnb" in c.metadata]
    assert names and all(n.startswith("vpt_deep-fig-") and n.count("vpt_deep-") == 1 for n in names)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_every_template_is_valid_nbformat_with_cell_ids(template):
    """A cell without an id is a warning on every execution now and an error in a later nbformat."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb = nbformat.read(template, as_version=4)
        nbformat.validate(nb)
    cells = json.loads(template.read_text())["cells"]
    ids = [c.get("id") for c in cells]
    assert all(ids) and len(set(ids)) == len(ids), template.name
