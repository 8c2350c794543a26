"""The Experiment page (one per method): what trains, the chosen settings, seeds, curves, errors."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from vptlib.data.classes import DISPLAY_NAMES
from vptlib.runs import records

from . import style
from .loading import TITLES, by_epochs, changed_settings, size_text, verified_run


def summary(run_dir: str | Path) -> pd.DataFrame:
    """What the method trains and how many parameters, as a two-column table."""
    r = verified_run(run_dir)
    c, m = r["config"], r["metrics"]
    rows = [
        ("method", TITLES.get(c["method"], c["method"])),
        ("trains", c["trains"]),
        ("trainable parameters", f"{m['trainable_params']:,}"),
        ("total parameters", f"{m['total_params']:,}"),
        ("trainable share", f"{m['trainable_params'] / m['total_params']:.4%}"),
        ("checkpoint size", size_text(m["checkpoint_bytes"])),
        ("settings", changed_settings(c, m)),
        *([("selected epoch (by validation)", str(m["best_epoch"]))] if by_epochs(m) else [("fit", _fit(m))]),
        ("run id", Path(run_dir).name),
        ("precision", m["precision"]),
        ("attention kernel", str(c.get("attention"))),
        ("device", m["device"]),
        ("model", c["model"]),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def _fit(metrics: dict) -> str:
    """How a run without epochs was fitted, in words, from its record."""
    if "linear_probe_C" in metrics:
        return (
            f"L2 logistic regression by L-BFGS, once; C = {metrics['linear_probe_C']:.4g} chosen on validation "
            f"({metrics.get('selected_by', 'validation accuracy')})"
        )
    if metrics.get("trainable_params"):
        return f"in closed form, once ({metrics.get('selected_by', 'validation accuracy')})"
    return "nothing is fitted: the frozen model and the class prompts score each image"


def class_prompts(run_dir: str | Path) -> pd.DataFrame | None:
    """A text method's class prompts as its run recorded them (config.json), one row per
    prompt; None for a method that reads no text."""
    prompts = verified_run(run_dir)["config"].get("text_prompts")
    if not prompts:
        return None
    rows = [(DISPLAY_NAMES.get(c, c), p) for c, ps in prompts.items() for p in ps]
    return pd.DataFrame(rows, columns=["class", "prompt"]).set_index("class")


def _trained(run_dir: str | Path) -> dict | None:
    """The run's record if it trained (epochs, or the probe's fit over C); None if it trained nothing."""
    r = verified_run(run_dir)
    return r if (Path(run_dir) / records.HISTORY).is_file() or r["metrics"].get("linear_probe_curve") else None


def training_note(run_dir: str | Path) -> str:
    """Markdown: what the page's Training figure shows for this run's method, or why there is none."""
    r = verified_run(run_dir)
    title = TITLES.get(r["config"]["method"], r["config"]["method"])
    prompts = " Its class texts are listed below." if r["config"].get("text_prompts") else ""
    if _trained(run_dir) is None:
        return (
            f"{title} trains nothing, so there is no training figure: it scores each image by the cosine "
            f"similarity of its embedding with the mean embedding of each class's prompts (CLIP's prompt "
            f"ensembling).{prompts}"
        )
    if r["metrics"].get("linear_probe_curve"):
        return f"{title} is fitted in closed form for each value of C: the figure is its search over C.{prompts}"
    return f"{title} trains by epochs: loss, accuracy and the gradient norm per epoch.{prompts}"


def plot_training(run_dir: str | Path):
    """The page's Training figure (:func:`plot_history`), or None for a method that trains nothing."""
    if _trained(run_dir) is None:
        return None
    fig = plot_history(run_dir)
    plt.close(fig)  # shown once, as the cell's result
    return fig


def plot_history(run_dir: str | Path):
    """Loss and accuracy per epoch for train, val and test (the selected epoch marked), the
    gradient norm before clipping (with the clipping threshold), and WiSE-FT's alpha curve."""
    r = verified_run(run_dir)
    hist_path = Path(run_dir) / records.HISTORY
    curve = r["metrics"].get("wise_ft_curve")
    h = pd.read_csv(hist_path) if hist_path.is_file() else None
    if h is None and r["metrics"].get("linear_probe_curve"):  # fitted in closed form: its curve is over C
        return plot_probe_curve(r["metrics"])
    norms = h is not None and "grad_norm_mean" in h
    panels = 2 + bool(norms) + bool(curve)
    # Two panels a row at the column's width, so the fonts are shown at their size.
    rows = (panels + 1) // 2
    fig, grid = plt.subplots(rows, 2, figsize=(style.COLUMN_INCHES, 3.1 * rows), squeeze=False)
    for extra in grid.flat[panels:]:
        fig.delaxes(extra)
    axes = list(grid.flat[:panels])
    if h is None:
        for ax in axes:
            ax.text(0.5, 0.5, "no training: nothing to plot", ha="center", va="center")
            ax.set_axis_off()
        return fig
    best = r["metrics"]["best_epoch"]
    for ax, what in zip(axes[:2], ("loss", "acc"), strict=True):
        ax.plot(h.epoch, h[f"train_{what}"], label="train (augmented, running)")
        ax.plot(h.epoch, h[f"val_{what}"], label="validation (selects the epoch)")
        if h[f"test_{what}"].notna().any():
            ax.plot(h.epoch, h[f"test_{what}"], "--", label="test (never used for selection)")
        ax.axvline(best, color="k", lw=0.8, ls=":", label=f"selected epoch {best}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 2.5
        ax.set_ylabel("cross-entropy" if what == "loss" else "accuracy")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    if norms:  # the global gradient norm over each epoch's steps, before any clipping
        ax = axes[2]
        ax.plot(h.epoch, h.grad_norm_mean, marker=".", label="mean over the epoch's steps")
        ax.plot(h.epoch, h.grad_norm_max, ls="--", label="largest step")
        clip = r["config"].get("grad_clip") or 0
        if clip:
            ax.axhline(clip, color="r", lw=0.8, label=f"clipped above {clip:g}")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 2.5
        ax.set_ylabel("gradient norm (before clipping)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if curve:  # WiSE-FT: the mixing coefficient, chosen on validation after training
        ax = axes[-1]
        c = pd.DataFrame(curve)
        ax.plot(c.alpha, c.val_acc, marker="o", label="validation (chooses alpha)")
        if "test_acc" in c:  # a run that was a tuning grid's point never looked at test
            ax.plot(c.alpha, c.test_acc, "--", marker=".", label="test (never used for selection)")
        ax.axvline(r["metrics"]["wise_ft_alpha"], color="k", lw=0.8, ls=":", label="chosen alpha")
        ax.set_xlabel("alpha (0: zero-shot, 1: fine-tuned)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_probe_curve(metrics: dict):
    """The L-BFGS probe's training: validation accuracy and loss over the C it searched, the
    chosen C marked (what epochs are to the other methods)."""
    c = pd.DataFrame(metrics["linear_probe_curve"])
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(c.C, c.val_acc, marker=".", label="validation accuracy (chooses C)")
    ax.axvline(
        metrics["linear_probe_C"], color="k", lw=0.8, ls=":", label=f"chosen C = {metrics['linear_probe_C']:.3g}"
    )
    ax.set_xscale("log")
    ax.set_xlabel("C (inverse L2 strength; left: stronger regularisation)")
    ax.set_ylabel("validation accuracy")
    loss = ax.twinx()
    loss.plot(c.C, c.val_loss, color="tab:orange", alpha=0.7, label="validation loss")
    loss.set_ylabel("validation cross-entropy")
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()[0] + loss.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def seeds_note(results: list) -> str:
    """Markdown: what the seeds change for this method, or why it ran once."""
    first = records.read_config(results[0].run_dir)
    title = TITLES.get(first["method"], first["method"])
    if len(results) == 1 and not by_epochs(results[0].metrics):
        return (
            f"{title} fits once, without epochs, augmentation or a random initialisation, so its result does not "
            f"depend on the seed: it ran once (seed {first['seed']}), and its row on the Results page has no spread "
            "over seeds."
        )
    return (
        "Each seed changes the initialisation, the batch order and the augmentation; the spread is the "
        "run-to-run noise the Results page's comparisons must exceed."
    )


def seed_table(results: list) -> pd.DataFrame:
    """One row per seed of an experiment: its run, selected epoch (for a run by epochs) and accuracies."""
    rows = [
        {
            "seed": records.read_config(r.run_dir)["seed"],
            "run id": r.run_dir.name,
            "selected epoch": r.metrics["best_epoch"] if by_epochs(r.metrics) else "–",
            "val acc (%)": 100 * r.metrics["val"]["accuracy"] if r.metrics["val"] else np.nan,
            "test acc (%)": 100 * r.metrics["test"]["accuracy"],
            "test ECE": r.metrics["test"]["ece"],
        }
        for r in results
    ]
    df = pd.DataFrame(rows).set_index("seed").round(3)
    if len(df) > 1:
        df.loc["mean ± std"] = [
            "",
            "",
            f"{df['val acc (%)'].mean():.2f} ± {df['val acc (%)'].std():.2f}",
            f"{df['test acc (%)'].mean():.2f} ± {df['test acc (%)'].std():.2f}",
            f"{df['test ECE'].mean():.3f}",
        ]
    return df


def plot_confusion(run_dir: str | Path):
    r = verified_run(run_dir)
    cm = np.array(r["metrics"]["test"]["confusion_matrix"])
    names = [DISPLAY_NAMES.get(c, c) for c in r["config"]["classes"]]
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    sns.heatmap(
        pd.DataFrame(cm, index=names, columns=names),
        annot=True,
        fmt="d",
        cmap="Blues",
        cbar=False,
        square=True,
        linewidths=0.5,
        ax=ax,
    )
    ax.set_xticklabels(ax.get_xticklabels(), rotation=30, ha="right")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    return fig


def per_class_table(run_dir: str | Path) -> pd.DataFrame:
    m = verified_run(run_dir)["metrics"]["test"]
    df = pd.DataFrame(m["per_class"]).T
    df.index = [DISPLAY_NAMES.get(c, c) for c in df.index]
    df["support"] = df["support"].astype(int)
    return df.round(3)


def timing_table(run_dir: str | Path) -> pd.DataFrame:
    """What the run cost on this build's machine: per epoch for a run by epochs; the fit's
    seconds for a run fitted once (no zeros for epochs it never ran)."""
    m = verified_run(run_dir)["metrics"]
    if not by_epochs(m):
        fit = m.get("fit_seconds")
        return pd.DataFrame(
            {
                "fit (s)": [f"{fit:.2f}" if fit is not None else "– (nothing is fitted)"],
                "feature setup (s)": [f"{m.get('setup_seconds', 0.0):.2f}"],
                "device": [m["device"]],
                "precision": [m["precision"]],
            }
        ).set_index("fit (s)")
    return pd.DataFrame(
        {
            "seconds per epoch": [f"{m['seconds_per_epoch']:.2f}"],
            "training images per second": [f"{m['images_per_second']:.1f}"],
            "epochs run": [m["epochs_run"]],
            "device": [m["device"]],
            "precision": [m["precision"]],
        }
    ).set_index("seconds per epoch")


def tuning_table(tuned) -> pd.DataFrame:
    """The tuning grid of one method (:class:`vptlib.study.tuning.Tuned`): each point's validation
    accuracy and loss, and which one was chosen. Test accuracy is not shown: the points
    that were not chosen never saw test."""
    grid = tuned.grid
    if grid is None or grid.empty:
        return None  # tuning_note says why there is no grid
    lr = ["lr"] if "base_lr" in tuned.axes and "lr" in grid else []  # the lr a base_lr stands for
    failed = ["error"] if "error" in grid and (grid["error"].fillna("") != "").any() else []
    out = grid[[*tuned.axes, *lr, "val_acc", "val_loss", "run_id", *failed]].copy()
    out["val_acc"] = (100 * out["val_acc"]).round(2)
    out["val_loss"] = out["val_loss"].round(4)
    out["chosen"] = ["✓ chosen" if c else "" for c in grid["chosen"]]
    out["seed"] = tuned.seed  # the tuning seed: no reported run is a grid point
    return out.rename(columns={"val_acc": "val acc (%)", "val_loss": "val loss", "run_id": "run id"}).set_index(
        tuned.axes
    )


def tuning_note(tuned, method: str) -> str:
    """Markdown: how the settings of the method's row were chosen, as this build did it."""
    from vptlib.methods import spec

    title = TITLES.get(method, method)
    if tuned.grid is not None and not tuned.grid.empty:
        return (
            "Each point of the profile's grid for this method trained once, with the tuning seed (the table's "
            "`seed` column, never one of the reported seeds), and was scored on the validation split only: a grid "
            "point never holds the test split. The chosen point (best validation accuracy; ties broken as the "
            "method's paper does, stated below) then ran afresh with every reported seed, and only those runs "
            "were evaluated on test."
        )
    s = spec(method)
    if not s.trains:
        why = "it trains nothing by an optimiser, so the profile gives it no grid"
    elif s.fixed_recipe:
        why = "it follows its paper's recipe, which fixes its settings, so the profile gives it no grid"
    else:
        why = "the profile gives it no grid here (or an override fixed every axis)"
    return f"No grid of settings was tried for {title}: {why}; it ran with the profile's settings."


def tuning_edges_html(tuned) -> str:
    """A warning box when a chosen grid value is the smallest or largest of its axis, else nothing."""
    import html

    if not getattr(tuned, "edges", None):
        return ""
    items = "".join(f"<li>{html.escape(note)}</li>" for note in tuned.edges)
    return (
        f'<div class="admonition warning"><p class="admonition-title">On the edge of the grid</p><ul>{items}</ul></div>'
    )


def tie_rule_html(method: str, tuned=None) -> str:
    """How this method's grid breaks a tie of validation accuracy (from its ``TrainDefaults``);
    nothing when it had no grid (``tuned`` given and empty)."""
    from vptlib.methods import spec
    from vptlib.study.tuning import TIE_RULES

    if tuned is not None and (tuned.grid is None or tuned.grid.empty):
        return ""
    return f"<p>Tie rule for {TITLES.get(method, method)}: {TIE_RULES[spec(method).defaults.grid_ties]}.</p>"
