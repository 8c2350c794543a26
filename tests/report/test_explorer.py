"""The prediction explorer: a table in the static build, an inert widget when executed headless."""

from __future__ import annotations

import json
import time

import nbformat
import pandas as pd
import pytest

from vptlib.report.examples import prediction_explorer


@pytest.fixture()
def run_dir(tmp_path):
    from PIL import Image

    d = tmp_path / "run"
    d.mkdir()
    rows = []
    for i, (true, pred) in enumerate([("glioma", "glioma"), ("glioma", "pituitary"), ("no_tumor", "no_tumor")]):
        Image.new("L", (16, 16), 40 * i).save(tmp_path / f"{i}.png")
        probs = {f"prob_{c}": float(c == pred) for c in ("glioma", "no_tumor", "pituitary")}
        rows.append({"split": "test", "path": f"{i}.png", "true": true, "pred": pred, **probs})
    pd.DataFrame(rows).to_csv(d / "predictions.csv", index=False)
    return d


def test_static_build_gets_every_class_right_and_wrong(run_dir, monkeypatch):
    monkeypatch.setenv("VPTLIB_STATIC", "1")
    table = prediction_explorer(run_dir, run_dir.parent)
    true, pred = table[("class", "true")], table[("class", "predicted")]
    assert set(true) == {"glioma", "no_tumor"} and (true != pred).any()
    # a reader's table: the file's name as the row, classes by name, two decimals per probability
    assert table.index.name == "image" and "/" not in "".join(table.index)
    probs = [c for c in table.columns if c[0] == "probability"]
    assert probs and all(table[c].str.fullmatch(r"\d\.\d\d").all() for c in probs)


def test_the_widget_needs_no_front_end_and_filters_kernel_side(run_dir, monkeypatch):
    monkeypatch.delenv("VPTLIB_STATIC", raising=False)
    box = prediction_explorer(run_dir, run_dir.parent)
    true_dd, pred_dd = box.children[0].children
    out = box.children[1]
    assert len(out.outputs) == 1 and "text/html" in out.outputs[0]["data"]  # the table, at once
    true_dd.value = "glioma"
    pred_dd.value = "pituitary"
    assert out.outputs[0]["data"]["text/markdown"] == "1 images"
    assert len(out.outputs) == 2 and "Figure" in out.outputs[1]["data"]["text/plain"]  # the image row (PNG in a kernel)


def test_plain_papermill_runs_the_explorer_cell_at_once(run_dir, tmp_path, monkeypatch):
    # The reported hang: plain papermill (no VPTLIB_STATIC, which the kernel inherits) at
    # the explorer cell. It must build the widget and return well inside the limit.
    import papermill as pm

    monkeypatch.delenv("VPTLIB_STATIC", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from vptlib.report.examples import prediction_explorer\n"
            f"prediction_explorer({json.dumps(str(run_dir))}, {json.dumps(str(run_dir.parent))})"
        )
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "t.ipynb"))
    t0 = time.monotonic()
    pm.execute_notebook(str(tmp_path / "t.ipynb"), str(tmp_path / "o.ipynb"), progress_bar=False, execution_timeout=120)
    assert time.monotonic() - t0 < 120
    done = nbformat.read(str(tmp_path / "o.ipynb"), as_version=4)
    kinds = [k for o in done.cells[0].outputs for k in o.get("data", {})]
    assert "application/vnd.jupyter.widget-view+json" in kinds, kinds
