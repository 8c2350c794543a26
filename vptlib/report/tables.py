"""The Results page's two tables, cut from :func:`~vptlib.report.results.results_table`, and the
definitions of the metrics they show.

The headline table keeps what a reader compares first (accuracy with its spread and its
interval, what each method trains, and the earlier report's number) in five columns that
fit the article column; everything else is in the secondary table below it.
"""

from __future__ import annotations

import inspect

import pandas as pd

from vptlib.runs import conformal
from vptlib.runs.metrics import expected_calibration_error, wilson_ci

EARLIER = "earlier report (%)"
COST = "GFLOPs / image: predict, train step"
SETS = f"{round(100 * (1 - conformal.ALPHA))}% sets: coverage (%) / size"
TUNING = "grid points / steps"
HEADLINE = ["method", "test acc. (%)", "95% CI", "trainable params", TUNING, EARLIER]
# The other metrics, in two tables that each fit the article column: how good, and at what cost.
QUALITY = ["method", "per seed (%)", "balanced acc. (%)", "macro-F1", "ECE", SETS, "train acc. (%)"]
COSTS = ["method", "selected epoch", "checkpoint", "s / epoch", "training (s)", COST]
SECONDARY = [*QUALITY, *COSTS[1:]]


def _number(x: object, digits: int) -> str:
    return "–" if x is None or x == "–" or pd.isna(x) else f"{float(x):,.{digits}f}"


def headline_table(table: pd.DataFrame) -> pd.DataFrame:
    """Method, seed-mean test accuracy ± std (one decimal), the 95% Wilson interval, trainable
    parameters with thousands separators, and the earlier report's accuracy (labelled as
    not reproduced: it came from code with known bugs and test-set selection)."""
    if table.empty:
        return pd.DataFrame(columns=HEADLINE).set_index("method")
    std = table["± std"].map(lambda s: "" if s.startswith("–") else f" ± {float(s):.1f}")
    out = pd.DataFrame(
        {
            "method": table["method"],
            "test acc. (%)": table["test acc (%)"].map(lambda v: f"{v:.1f}") + std,
            "95% CI": table["95% CI"],
            "trainable params": table["trainable params"].map(lambda n: f"{int(n):,}"),
            TUNING: [
                f"{int(g):,} / {int(n):,}" for g, n in zip(table["grid points"], table["optimiser steps"], strict=True)
            ],
            EARLIER: table["earlier report acc (%, not reproduced)"].map(lambda v: _number(v, 1)),
        }
    )
    return out.set_index("method")


def secondary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The other metrics, each with one number of decimals throughout its column."""
    if table.empty:
        return pd.DataFrame(columns=SECONDARY).set_index("method")
    out = pd.DataFrame(
        {
            "method": table["method"],
            "per seed (%)": table["per seed (%)"],
            "balanced acc. (%)": table["balanced acc (%)"].map(lambda v: _number(v, 1)),
            "macro-F1": table["macro-F1"].map(lambda v: _number(v, 3)),
            "ECE": table["ECE"].map(lambda v: _number(v, 3)),
            SETS: table["set coverage (%)"].map(lambda v: _number(v, 1))
            + " / "
            + table["set size"].map(lambda v: _number(v, 2)),
            "train acc. (%)": table["train acc (%)"].map(lambda v: _number(v, 1)),
            "selected epoch": table["selected epoch"],
            "checkpoint": table["checkpoint"],
            "s / epoch": table["s / epoch"].map(lambda v: _number(v, 2)),
            "training (s)": table["training (s)"].map(lambda v: _number(v, 1)),
            COST: table["GFLOPs / image"].map(_flops) + ", " + table["train GFLOPs / image"].map(_flops),
        }
    )
    return out.set_index("method")[SECONDARY[1:]]


def quality_table(table: pd.DataFrame) -> pd.DataFrame:
    """The secondary metrics of quality: each seed, the class-balanced ones, calibration, the
    conformal sets and the fit to the training images."""
    return secondary_table(table)[QUALITY[1:]]


def cost_table(table: pd.DataFrame) -> pd.DataFrame:
    """What each row cost: the epoch each seed kept, the checkpoint, the time and the FLOPs."""
    return secondary_table(table)[COSTS[1:]]


def grouped(table: pd.DataFrame, decimals: int | None = 1) -> pd.DataFrame:
    """A wide table of ``"group: column"`` headers as two header rows (the group spanning its
    columns), so it fits the article column; its numeric columns with ``decimals`` throughout
    (counts of images as whole numbers; None: as they are) and a missing value as "–", never "NaN"."""
    if "finding" in table.columns:  # a sentence in place of a table (no data, no runs)
        return table
    columns = [tuple(c.split(": ", 1)) if ": " in c else ("", c) for c in table.columns]
    out = table.copy()
    for column in out.columns:
        if decimals is None or not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].map(lambda v: "–" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
            continue
        whole = pd.api.types.is_integer_dtype(out[column]) or column.endswith(("images", ": n"))
        out[column] = out[column].map(lambda v, w=whole: _number(v, 0 if w else decimals))
    out.columns = pd.MultiIndex.from_tuples(columns)
    return out


def _flops(g: float) -> str:
    """GFLOPs with three significant digits (the tiny model's are a few MFLOPs)."""
    return "–" if pd.isna(g) else f"{g:.3g}"


def _ece_bins() -> int:
    return inspect.signature(expected_calibration_error).parameters["bins"].default


def _ci_level() -> float:
    return inspect.signature(wilson_ci).parameters["level"].default


def metric_definitions(protocol: str = "validated") -> str:
    """Markdown: what each column means, with the constants the code uses; the selected epoch
    as the profile's ``protocol`` keeps it (:data:`vptlib.study.protocols.SELECT`)."""
    from vptlib.study.protocols import SELECT

    level = round(100 * _ci_level())
    kept = (
        "the epoch chosen on validation accuracy (ties: lower validation loss)"
        if SELECT[protocol] == "val"
        else "the last epoch (the validation-free protocol chooses nothing on validation)"
    )
    return "\n".join(
        [
            "- **test acc. (%)**: the share of test images whose most probable class is the true one, "
            "averaged over the method's seeds, ± the standard deviation over seeds.",
            f"- **{level}% CI**: the Wilson score interval of that accuracy over the test images "
            f"(each image counted by the share of seeds that get it right). It counts the test images "
            f"only and leaves out the spread over seeds; the paired comparisons below count both.",
            f"- **{TUNING}**: how many settings of the method were tried on validation before its row "
            "was run (its tuning grid's points; 1 without a grid), and the optimiser steps one reported "
            "run took (0 for a closed-form fit). A method tried at more settings had more chances to fit "
            "this data, so compare rows with that in mind.",
            "- **balanced acc. (%)**: the mean over the classes of each class's recall, so a "
            "class with fewer test images weighs as much as the others.",
            "- **macro-F1**: the unweighted mean over the classes of F1, the harmonic mean of a "
            "class's precision and recall.",
            f"- **ECE**: expected calibration error, the mean over {_ece_bins()} equal-width "
            "confidence bins, weighted by their share of images, of |accuracy − mean confidence| "
            "(0 is calibrated).",
            f"- **{SETS}**: split-conformal prediction sets (APS, non-randomised) that hold the true class "
            f"for at least {round(100 * (1 - conformal.ALPHA))}% of exchangeable images. They are calibrated on a "
            "random half of the test images, which chose nothing (the validation images chose the epoch and "
            "the settings, so sets calibrated on them would cover less than promised), and scored on the other "
            f"half; the share of images whose set holds the true class, and the mean number of classes a set "
            f"holds (1 is a single label, 4 says nothing), are means over {conformal.REPEATS} seeded halvings.",
            "- **train acc. (%)**: accuracy on the training images at the selected epoch; far above "
            "test accuracy means the method memorised its training images more than it learned.",
            f"- **{COST}**: floating-point operations (a multiply-add is two) per image, counted by "
            "PyTorch's `FlopCounterMode` on a batch: a prediction from pixels, and one training step's "
            "forward and backward as the method trains (a feature-cache method's step runs its head only); "
            "**training (s)**: the seed-mean wall time of the training epochs.",
            f"- **selected epoch**: per seed, {kept}; **s / epoch**: mean training seconds per epoch on "
            "this build's machine.",
        ]
    )
