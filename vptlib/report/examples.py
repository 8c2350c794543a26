"""The test images an experiment page shows: its misclassified examples and its prediction
table (or, in a live notebook, an explorer), every class taken in turn."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from PIL import Image

from vptlib.data.classes import DISPLAY_NAMES
from vptlib.switches import flag

from . import style
from .loading import STATIC_ENV, predictions
from .tables import grouped


def misclassified(run_dir: str | Path, data_root: str | Path, n: int = 8):
    """A grid of wrongly classified test images with their true and predicted class, the
    classes taken in turn (:func:`by_class`), so one class's errors do not fill the grid."""
    p = predictions(run_dir)
    wrong = by_class(p[p.true != p.pred], n)
    cols = max(1, min(4, len(wrong)))
    rows = max(1, -(-len(wrong) // cols))
    side = style.COLUMN_INCHES / 4  # four a row at the column's width, whatever the count
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, (side + 0.45) * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    if wrong.empty:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    for ax, (_, r) in zip(axes.ravel(), wrong.iterrows(), strict=False):
        ax.imshow(Image.open(Path(data_root) / r.path).convert("L"), cmap="gray")
        conf = r[f"prob_{r.pred}"]
        ax.set_title(
            f"true {DISPLAY_NAMES.get(r.true, r.true)}\npred {DISPLAY_NAMES.get(r.pred, r.pred)} ({conf:.2f})",
            fontsize=9,
        )
    fig.tight_layout()
    return fig


def by_class(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most ``n`` of ``rows``, the true classes taken in turn and each class's most
    confident predictions first: a page's examples show every class, not the first in file
    order (the test split is sorted by class, so the first rows are all one class)."""
    if rows.empty:
        return rows
    conf = rows.apply(lambda r: r[f"prob_{r.pred}"], axis=1)
    ranked = rows.assign(_conf=conf).sort_values(["_conf", "path"], ascending=[False, True])
    ranked["_turn"] = ranked.groupby("true").cumcount()
    return ranked.sort_values(["_turn", "true"]).head(n).drop(columns=["_conf", "_turn"])


def prediction_explorer(run_dir: str | Path, data_root: str | Path):
    """An ipywidgets explorer of test predictions in a live notebook; a static table otherwise.

    The static build (papermill for the book, ``VPTLIB_STATIC=1``) gets the table, so the
    HTML needs no widget JavaScript from a CDN. The explorer itself is inert until a
    reader changes a filter: it writes its view into the ``Output`` widget's ``outputs``
    kernel-side (``append_display_data``), never by capturing a cell's output (``with
    out:``), which only a live front end routes; executed headless (plain papermill,
    nbclient) it builds, stores its state and returns at once (tests/report/test_explorer.py).
    """
    p = predictions(run_dir)
    shown = pd.concat([by_class(p[p.true == p.pred], 10), by_class(p[p.true != p.pred], 10)])
    table = explorer_table(shown)
    if flag(STATIC_ENV):  # every class, right and wrong, not the first rows of one class
        return table
    import ipywidgets as w
    from IPython.display import Markdown

    classes = ["(any)", *sorted(set(p.true) | set(p.pred))]  # a class may be predicted and never true
    true_dd = w.Dropdown(options=classes, description="true")
    pred_dd = w.Dropdown(options=classes, description="predicted")
    out = w.Output()
    out.append_display_data(table)  # what the static page shows, until a filter changes

    def show(*_):
        sel = p
        if true_dd.value != "(any)":
            sel = sel[sel.true == true_dd.value]
        if pred_dd.value != "(any)":
            sel = sel[sel.pred == pred_dd.value]
        out.outputs = ()
        out.append_display_data(Markdown(f"{len(sel)} images"))
        if len(sel):
            out.append_display_data(misclassified_from(sel.head(8), data_root))

    true_dd.observe(show, "value")
    pred_dd.observe(show, "value")
    return w.VBox([w.HBox([true_dd, pred_dd]), out])


def explorer_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Predictions as a reader reads them: the image's file name, the true and predicted class
    by their display names, and each class's probability with two decimals, no row index."""
    probs = [c for c in rows.columns if c.startswith("prob_")]
    out = pd.DataFrame(
        {
            "image": rows["path"].map(lambda p: Path(p).name),
            "class: true": rows["true"].map(lambda c: DISPLAY_NAMES.get(c, c)),
            "class: predicted": rows["pred"].map(lambda c: DISPLAY_NAMES.get(c, c)),
            **{
                f"probability: {DISPLAY_NAMES.get(c.removeprefix('prob_'), c.removeprefix('prob_'))}": rows[c].map(
                    lambda v: f"{v:.2f}"
                )
                for c in probs
            },
        }
    )
    return grouped(out.set_index("image"), decimals=None)


def misclassified_from(rows: pd.DataFrame, data_root: str | Path):
    cols = max(1, min(4, len(rows)))
    side = style.COLUMN_INCHES / 4
    grid = max(1, -(-len(rows) // cols))
    fig, axes = plt.subplots(grid, cols, figsize=(side * cols, (side + 0.3) * grid), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (_, r) in zip(axes.ravel(), rows.iterrows(), strict=False):
        ax.imshow(Image.open(Path(data_root) / r.path).convert("L"), cmap="gray")
        ax.set_title(f"{r.true} -> {r.pred}", fontsize=9)
    plt.close(fig)
    return fig
