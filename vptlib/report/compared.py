"""Figures that put every method side by side, each in its own colour (:mod:`.style`):
validation accuracy and the losses over epochs, per-class test recall, and calibration."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from vptlib.runs import records
from vptlib.runs.metrics import expected_calibration_error, reliability

from . import style
from .loading import TITLES, latest_groups, latest_runs, scored_arrays, verified_metrics


def _histories(runs: str | Path, profile: str) -> dict[str, pd.DataFrame]:
    """Each trained method's ``history.csv`` (first seed); methods that train nothing have none."""
    out = {}
    for method, run_dir in latest_runs(runs, profile).items():
        h = Path(run_dir) / records.HISTORY
        if h.is_file():
            out[method] = pd.read_csv(h)
    return out


def plot_val_curves(runs: str | Path, profile: str):
    """Validation accuracy over epochs, one line per trained method (first seed)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for method, df in _histories(runs, profile).items():
        ax.plot(df.epoch, df.val_acc, marker=".", label=TITLES[method], color=style.color(method))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 2.5
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def plot_losses(runs: str | Path, profile: str):
    """Training and validation loss over epochs, side by side, one line per trained method.

    Log scale: the methods' losses span orders of magnitude. The validation loss is the one
    selection reads on ties; a training loss falling while it rises is over-fitting."""
    hist = _histories(runs, profile)
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4), sharey=True)
    for method, df in hist.items():
        for ax, col in zip(axes, ("train_loss", "val_loss"), strict=True):
            ax.plot(df.epoch, df[col], marker=".", color=style.color(method), label=TITLES[method])
    for ax, title in zip(axes, ("training loss", "validation loss"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy (log)")
    if hist:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, frameon=False)
        fig.tight_layout(rect=(0, 0.08 + 0.05 * ((len(hist) - 1) // 3), 1, 1))
    return fig


def recall_by_class(runs: str | Path, profile: str) -> pd.DataFrame:
    """Test recall (%) of each class, per method, the mean over its seeds."""
    rows = {}
    for method, group in latest_groups(runs, profile).items():
        per_class = [verified_metrics(d)["test"]["per_class"] for d in group]
        classes = list(per_class[0])
        rows[TITLES[method]] = {c: 100 * np.mean([m[c]["recall"] for m in per_class]) for c in classes}
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_recall_by_class(runs: str | Path, profile: str):
    """A methods x classes heat map of test recall, with a colour bar and the value in each cell."""
    table = recall_by_class(runs, profile)
    fig, ax = plt.subplots(figsize=(7, 0.42 * max(1, len(table)) + 1.4))
    if table.empty:
        ax.axis("off")
        return fig
    im = ax.imshow(table.to_numpy(), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [c.replace("_", " ") for c in table.columns])
    ax.set_yticks(range(len(table)), table.index)
    for (i, j), v in np.ndenumerate(table.to_numpy()):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="white" if v < 60 else "black")
    ax.spines[:].set_visible(False)
    fig.colorbar(im, ax=ax, label="test recall (%)")
    fig.tight_layout()
    return fig


def plot_reliability(runs: str | Path, profile: str):
    """One reliability diagram per method (first seed), its ECE in the title.

    Bars span the 10 confidence bins; a dot marks each bin's mean confidence, so a
    calibrated bin has its dot on the diagonal."""
    runs_ = latest_runs(runs, profile)
    n = max(1, len(runs_))
    cols = min(4, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(1.9 * cols, 2.0 * nrows), squeeze=False, sharex=True, sharey=True)
    for ax, (method, run_dir) in zip(axes.flat, runs_.items(), strict=False):
        labels, probs, _ = scored_arrays(run_dir)
        rel = reliability(probs, labels)
        k = len(rel["accuracy"])
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.bar((np.arange(k) + 0.5) / k, rel["accuracy"], width=1 / k, color=style.color(method), alpha=0.7)
        ax.plot(rel["confidence"], rel["accuracy"], "k.", ms=4)  # each bin's mean confidence
        ax.set_title(f"{TITLES[method]}\nECE {expected_calibration_error(probs, labels):.3f}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(runs_) :]:
        ax.axis("off")
    fig.supxlabel("confidence")
    fig.supylabel("accuracy")
    fig.tight_layout()
    return fig
