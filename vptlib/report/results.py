"""The Results page: the main table, calibration, test looks and key findings (the comparisons
with the reference are :mod:`.comparison`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vptlib.runs import ledger
from vptlib.runs.metrics import wilson_ci

from . import style
from .comparison import DETECTABLE, POWER, signed
from .loading import (
    EARLIER_REPORT,
    TITLES,
    by_epochs,
    changed_settings,
    grid_size,
    latest_groups,
    latest_runs,
    optimiser_steps,
    predictions,
    seed_correct,
    size_text,
    verified_metrics,
    verified_run,
)
from .tables import grouped


def results_table(runs: str | Path, profile: str) -> pd.DataFrame:
    """One row per method over its seeds: mean +- std, and a 95% Wilson interval over test images."""
    rows = []
    for method, group in latest_groups(runs, profile).items():
        first = verified_run(group[0])
        metrics = [verified_metrics(d) for d in group]
        accs = np.array([m["test"]["accuracy"] for m in metrics])
        # test images are resampled; each image counts the share of seeds that get it right
        correct = seed_correct(group)
        lo, hi = wilson_ci(float(correct.mean()), correct.shape[1])
        rows.append(
            {
                "method": TITLES[method],
                "seeds": len(group),
                "test acc (%)": 100 * accs.mean(),
                "± std": f"{100 * accs.std(ddof=1):.2f}" if len(accs) > 1 else "– (1 run)",
                "95% CI": f"{100 * lo:.1f}-{100 * hi:.1f}",
                "per seed (%)": ", ".join(f"{100 * a:.1f}" for a in accs),
                "balanced acc (%)": 100 * np.mean([m["test"]["balanced_accuracy"] for m in metrics]),
                "macro-F1": np.mean([m["test"]["macro_f1"] for m in metrics]),
                "ECE": np.mean([m["test"]["ece"] for m in metrics]),
                "set coverage (%)": _mean_of(metrics, "coverage", 100),
                "set size": _mean_of(metrics, "mean_set_size"),
                "train acc (%)": 100 * np.mean([m["train_accuracy"] for m in metrics]),
                "trainable params": first["metrics"]["trainable_params"],
                "grid points": grid_size(runs, profile, method),
                "optimiser steps": int(np.mean([optimiser_steps(d) for d in group])),
                "checkpoint": size_text(first["metrics"]["checkpoint_bytes"]),
                "s / epoch": _mean([m["seconds_per_epoch"] for m in metrics if by_epochs(m)]),
                "training (s)": np.mean([m.get("seconds", {}).get("training", np.nan) for m in metrics]),
                "GFLOPs / image": first["metrics"].get("flops_per_image", {}).get("inference", np.nan) / 1e9,
                "train GFLOPs / image": first["metrics"].get("flops_per_image", {}).get("train_step", np.nan) / 1e9,
                "selected epoch": ", ".join(str(m["best_epoch"]) if by_epochs(m) else "–" for m in metrics),
                "earlier report acc (%, not reproduced)": EARLIER_REPORT.get(method, "–"),
                "settings": changed_settings(first["config"], first["metrics"]),
                "run id": ", ".join(d.name for d in group),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.round(
        {"test acc (%)": 2, "train acc (%)": 2, "balanced acc (%)": 2, "macro-F1": 3, "ECE": 3, "s / epoch": 2}
    )


def _mean_of(metrics: list[dict], key: str, scale: float = 1.0) -> float:
    """The seed mean of a conformal-set statistic (NaN for runs recorded without sets)."""
    values = [m["test"].get("conformal", {}).get(key) for m in metrics]
    return scale * float(np.mean(values)) if values and None not in values else float("nan")


def test_looks(runs: str | Path, profile: str) -> pd.DataFrame:
    """Per method, from the ledger: how many distinct settings (seeds aside) were evaluated on
    test, how many runs were, and how many more test scores were taken for plots only."""
    columns = ["settings evaluated on test", "test evaluations", "plot-only test looks"]
    looks = pd.DataFrame(ledger.read_ledger(Path(runs) / profile))
    if looks.empty:
        return pd.DataFrame(columns=columns)
    if "what" not in looks:  # a ledger written before plot looks were counted
        looks["what"] = "reported"
    reported = looks["what"].fillna("reported") == "reported"
    g, r = looks.groupby("method"), looks[reported].groupby("method")
    out = pd.DataFrame(
        {columns[0]: g.settings.nunique(), columns[1]: r.size(), columns[2]: (~reported).groupby(looks.method).sum()}
    )
    out = out.fillna(0).astype(int)
    out = out.reindex([m for m in TITLES.order if m in out.index])
    out.index = [TITLES.get(m, m) for m in out.index]
    return out


def key_findings_html(results: pd.DataFrame, table: pd.DataFrame) -> str:
    """:func:`key_findings` as the page's boxed summary (an admonition the book's theme styles)."""
    import html
    import re

    items = []
    for line in key_findings(results, table).splitlines():
        text = html.escape(line.removeprefix("- "))
        items.append("<li>" + re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text) + "</li>")
    return (
        '<div class="admonition tip"><p class="admonition-title">Key findings</p><ul>' + "".join(items) + "</ul></div>"
    )


def key_findings(results: pd.DataFrame, table: pd.DataFrame) -> str:
    """The Results page's summary box, generated from the two tables (never typed)."""
    if results.empty:
        return "No runs yet."
    acc = results.set_index("method")["test acc (%)"]
    best = acc.idxmax()
    lines = []
    if not table.empty:
        ref = table["reference"].iloc[0]
        lo_hi = results.set_index("method").loc[ref, "95% CI"]
        lines.append(f"- **Reference ({ref}):** {acc[ref]:.1f}% test accuracy (95% CI {lo_hi}).")
    ranked = acc.sort_values(ascending=False)
    runner = ranked.index[1] if len(ranked) > 1 else None
    lines.append(
        f"- **Highest mean test accuracy:** {best}, {acc[best]:.1f}%"
        + (
            f"; a ranking of means, not a test: it is not shown better than the runner-up, {runner} "
            f"({acc[runner]:.1f}%)."
            if runner is not None
            else "."
        )
    )
    if "missing_reference" in table.attrs:
        ref = table.attrs["missing_reference"]
        lines.append(f"- **No comparison:** the reference ({TITLES.get(ref, ref)}) has no runs in this build.")
    if not table.empty:
        better, worse, _ = signed(table)
        survived = [f"{m} (better)" for m in better] + [f"{m} (worse)" for m in worse]
        lines.append(
            "- **Differences from the reference that survive the Holm correction:** "
            + (", ".join(survived) if survived else "none")
            + "."
        )
        lines.append(f"- **What this design can see:** {_detectable_sentence(table)}")
    return "\n".join(lines)


def _detectable_sentence(table: pd.DataFrame) -> str:
    """The minimum detectable difference of the reference comparisons, in words."""
    mdd = table[DETECTABLE]
    column = f"the column \u201c{DETECTABLE}\u201d"
    if mdd.min() > 100:  # few seeds: no difference an accuracy can have would be found that often
        return (
            f"no true difference from the reference, however large, is found {POWER:.0%} of the time ({column}: "
            "more than 100 points for every comparison): these seeds are too few to compare methods at all."
        )
    over = int((mdd > 100).sum())
    top = f"{mdd.max():.1f}" if not over else f"more than 100 (for {over} of {len(mdd)} comparisons)"
    return (
        f"a true difference from the reference is sure to be found {POWER:.0%} of the time only when it is at least "
        f"{mdd.min():.1f} to {top} points (median {mdd.median():.1f}; {column}), so smaller differences may be real "
        "and unseen."
    )


def conclusion(results: pd.DataFrame, table: pd.DataFrame, pipeline_only: bool = False) -> str:
    """The Results page's closing paragraphs, generated from this build's two tables.

    ``pipeline_only``: a smoke build or dry run (its banner), whose numbers test the
    pipeline; the paragraphs then say so first."""
    if results.empty:
        return "No method has finished runs in this build, so there is nothing to conclude."
    r = results.set_index("method")
    acc = r["test acc (%)"]
    best = acc.idxmax()
    out = []
    if pipeline_only:
        out.append(
            "**These numbers test the pipeline.** They come from a smoke build or a dry run, so the "
            "sentences below describe what the code produced, not how the methods compare on CLIP and brain MRI."
        )
    out.append(f"The highest mean test accuracy was {best}'s, {acc[best]:.1f}% (95% CI {r.loc[best, '95% CI']}).")
    if "missing_reference" in table.attrs or table.empty:
        out.append("No method was compared with the reference in this build (see above), so no difference is claimed.")
    else:
        ref = table["reference"].iloc[0]
        better, worse, same = signed(table)
        claim = (
            f"Against the reference fixed before any result, {ref} ({acc[ref]:.1f}%), "
            f"{len(better)} of {len(table)} methods were better and {len(worse)} worse after the Holm correction"
        )
        out.append(
            claim + (f"; {', '.join(same)} could not be told apart from it on these test images." if same else ".")
        )
        level = [ref, *better, *same]  # not shown worse than the reference
        params = r.loc[level, "trainable params"].astype(int)
        cheapest = params.idxmin()
        out.append(
            f"Among the methods not shown worse than the reference, the one with the fewest trainable parameters "
            f"is {cheapest}, with {params[cheapest]:,}. Not shown worse is not shown as good: "
            + _detectable_sentence(table)
        )
    ece = r["ECE"].astype(float)
    out.append(
        f"The best calibrated on test was {ece.idxmin()} (mean ECE {ece.min():.3f}); the worst {ece.idxmax()} "
        f"({ece.max():.3f})."
    )
    out.append(
        "These are the results of one split of one data set whose images carry no patient identifiers; the "
        "Discussion says what they can and cannot show."
    )
    return "\n\n".join(out)


def plot_accuracy(table: pd.DataFrame):
    """Each method's seed-mean test accuracy with its 95% Wilson interval (the main table's CI)."""
    t = table.copy()
    t[["lo", "hi"]] = [[float(v) for v in ci.split("-")] for ci in t["95% CI"]]
    keys = TITLES.keys_of(t["method"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(t) + 1.2))
    ax.barh(range(len(t)), t["test acc (%)"], color=[style.color(m) for m in keys])
    ax.errorbar(
        t["test acc (%)"],
        range(len(t)),
        xerr=[t["test acc (%)"] - t.lo, t.hi - t["test acc (%)"]],  # a Wilson interval stays inside [0, 100]
        fmt="none",
        ecolor="black",
        capsize=3,
        lw=1,
    )
    ax.set_yticks(range(len(t)), t["method"])
    ax.invert_yaxis()  # the registry's order, top to bottom
    ax.set_xlim(0, 100)
    ax.set_xlabel("test accuracy (%), seed mean with 95% CI")
    fig.tight_layout()
    return fig


def plot_acc_vs_params(table: pd.DataFrame):
    """Test accuracy against trainable parameters; methods named in a legend, in their colours."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for key, (_, r) in zip(TITLES.keys_of(table["method"]), table.iterrows(), strict=True):
        x = max(r["trainable params"], 1)
        ax.scatter(x, r["test acc (%)"], s=50, color=style.color(key), label=r["method"], edgecolor="black", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log; zero-shot drawn at 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def dedup_table(runs: str | Path, profile: str, data_root: str | Path) -> pd.DataFrame:
    """Each method's test accuracy on the raw and on the de-duplicated test set (first seed)."""
    from vptlib.study.leakage import dedup_accuracy

    preds = {TITLES[m]: predictions(d) for m, d in latest_runs(runs, profile).items()}
    if not preds:
        return pd.DataFrame({"finding": ["no finished runs yet"]})
    return dedup_accuracy(preds, data_root).set_index("method")


def official_images(data_root: str | Path) -> pd.DataFrame:
    """The source's Testing folder, each image marked by its copy of a training image (or none)."""
    from vptlib.study.official import official_images as images

    return images(data_root)


def _official(kind: str, runs: str | Path, profile: str, images: pd.DataFrame) -> pd.DataFrame:
    from vptlib.study import official

    if images.empty:
        return pd.DataFrame({"finding": ["the set's source folder, or its Testing folder, is not here"]})
    found = {TITLES[m]: d for m, d in latest_runs(runs, profile).items()}
    if not found:
        return pd.DataFrame({"finding": ["no finished runs yet"]})
    return getattr(official, kind)(found, images)


def _mean(values: list[float]) -> float:
    """Their mean; NaN (shown "–") for none, e.g. the seconds per epoch of a fit without epochs."""
    return float(np.mean(values)) if values else np.nan


def official_accuracy(runs: str | Path, profile: str, images: pd.DataFrame) -> pd.DataFrame:
    """Each method (first seed) on the official Testing folder: all, the copies of training images, the rest."""
    table = _official("official_table", runs, profile, images)
    # Short sub-headers under each group (all, copies, the rest), so the nine columns fit:
    # images, accuracy (%) and balanced accuracy (%), as the page's text says.
    short = {"images": "n", "accuracy (%)": "acc. (%)", "balanced (%)": "bal. (%)"}
    table = table.rename(columns=lambda c: ": ".join([c.split(": ")[0], short.get(c.split(": ")[-1], c)]))
    return grouped(table)


def official_by_class(runs: str | Path, profile: str, images: pd.DataFrame) -> pd.DataFrame:
    """Each method's accuracy per class on the copies and on the rest of the official Testing folder."""
    return grouped(_official("official_by_class", runs, profile, images))


def official_leakage(images: pd.DataFrame) -> pd.DataFrame:
    """Per class: official test images and how many copy an image the runs learned from."""
    from vptlib.study.official import leakage_by_class

    if images.empty:
        return pd.DataFrame({"finding": ["the set's source folder, or its Testing folder, is not here"]})
    return leakage_by_class(images)
