"""One look for every figure: a fixed colour per method, and the theme a page sets up.

A method's colour is decided by its name (:data:`ASSIGNED`, else a hash of the name into the
palette), so VPT-deep is the same colour in the accuracy bars, the curves, the losses and
the scatter of every page, and adding a method recolours no other. Importing the report
changes no global state: a page calls :func:`setup` (``report.setup()``) for the theme, the
fonts and the table display.
"""

from __future__ import annotations

import functools
import hashlib

import matplotlib as mpl
import seaborn as sns

from vptlib.methods import METHODS

# The article column of the book's theme, in inches at the inline backend's dpi: a figure
# this wide is shown at its own size, a wider one is scaled down (its fonts with it).
COLUMN_INCHES = 7.5
FONT_SIZE = 10  # points at the column's width

RC = {
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE - 1,
    "ytick.labelsize": FONT_SIZE - 1,
    "legend.fontsize": FONT_SIZE - 1,
    "figure.titlesize": FONT_SIZE + 1,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


# The study's methods, each its own entry of tab20 (the colours they have always had).
ASSIGNED = {
    "zero_shot": 0,
    "linear": 1,
    "clap": 2,
    "tip_adapter_f": 3,
    "coop": 4,
    "vpt_shallow": 5,
    "vpt_deep": 6,
    "vision_lora": 7,
    "clip_lora": 8,
    "full": 9,
    "wise_ft": 10,
    "flyp": 11,
    "text_ce": 12,
    "gda": 13,
    "prolip": 14,
    "clip_svd": 15,
}


@functools.cache
def _palette() -> list[tuple[float, float, float]]:
    return sns.color_palette("tab20", 20)


def color(method: str) -> tuple[float, float, float]:
    """``method``'s colour: its assigned one, else one the name alone decides (never its position)."""
    palette = _palette()  # built once, not per bar or line
    if method in ASSIGNED:
        return palette[ASSIGNED[method]]
    return palette[int(hashlib.sha256(method.encode()).hexdigest(), 16) % len(palette)]


def colors() -> dict[str, tuple[float, float, float]]:
    """Every registered method's colour."""
    return {m: color(m) for m in METHODS}


def setup() -> None:
    """A page's look, set by the page (``report.setup()`` in its first cell), never on import:
    seaborn's theme, the fonts for every figure drawn after this, and tables that show whole
    values (a settings string cut at a width would hide the part after the cut; long cells wrap)."""
    import pandas as pd

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9)
    mpl.rcParams.update(RC)
    pd.set_option("display.max_colwidth", None)


def rendered_font_sizes(fig) -> list[float]:
    """The size in points of every visible text of ``fig`` as the book shows it: scaled by
    the column's width over the figure's when the figure is wider than the column."""
    scale = min(1.0, COLUMN_INCHES / fig.get_figwidth())
    texts = [t for t in fig.findobj(mpl.text.Text) if t.get_visible() and t.get_text().strip()]
    return [t.get_fontsize() * scale for t in texts]
