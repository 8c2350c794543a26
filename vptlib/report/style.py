"""One look for every figure: a fixed colour per method and fonts set once.

A method's colour is its place in the registry's order (:data:`vptlib.methods.METHODS`),
so VPT-deep is the same colour in the accuracy bars, the curves, the losses and the
scatter of every page, and a new method gets the next colour without a line here.
"""

from __future__ import annotations

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


def colors() -> dict[str, tuple[float, float, float]]:
    """Every registered method's colour, in the registry's order."""
    names = list(METHODS)
    palette = sns.color_palette("tab10" if len(names) <= 10 else "tab20", len(names))
    return dict(zip(names, palette, strict=True))


def color(method: str) -> tuple[float, float, float]:
    return colors()[method]


def keys_of(titles) -> list[str]:
    """The registry keys of methods named by their titles (a table's ``method`` column)."""
    by_title = {spec.title: key for key, spec in METHODS.items()}
    return [by_title[t] for t in titles]


def apply() -> None:
    """Set the fonts for every figure drawn after this (the report package calls it on import)."""
    mpl.rcParams.update(RC)


def rendered_font_sizes(fig) -> list[float]:
    """The size in points of every visible text of ``fig`` as the book shows it: scaled by
    the column's width over the figure's when the figure is wider than the column."""
    scale = min(1.0, COLUMN_INCHES / fig.get_figwidth())
    texts = [t for t in fig.findobj(mpl.text.Text) if t.get_visible() and t.get_text().strip()]
    return [t.get_fontsize() * scale for t in texts]
