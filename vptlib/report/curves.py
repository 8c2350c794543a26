"""The Curves page: accuracy against training images per class and against prompt length."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from . import style
from .loading import TITLES
from .tables import grouped


def _sweep_stats(df: pd.DataFrame, axis: str) -> pd.DataFrame:
    ok = df[df.error.fillna("") == ""].copy() if "error" in df else df.copy()
    ok["test_acc"] = ok.test_acc.astype(float) * 100
    g = ok.groupby(["method", axis])
    out = g.agg(
        mean=("test_acc", "mean"),
        std=("test_acc", "std"),
        seeds=("test_acc", "size"),
        params=("trainable_params", "first"),
    ).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


# A sweep axis as a reader names it (its values head the columns).
AXES = {"train_per_class": "training images per class", "prompt_tokens": "prompt tokens"}


def sweep_table(df: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Mean ± std test accuracy over seeds, one column per value of ``axis``, the methods in
    the sweep's order (the registry's), not the alphabet's."""
    st = _sweep_stats(df, axis)
    st["cell"] = [f"{m:.1f} ± {s:.1f} (n={n})" for m, s, n in zip(st["mean"], st["std"], st.seeds, strict=True)]
    t = st.pivot(index="method", columns=axis, values="cell")
    t = t.reindex([m for m in dict.fromkeys(df.method) if m in t.index])
    t.index = pd.Index([TITLES.get(m, m) for m in t.index], name="method")
    t.columns.name = AXES.get(axis, axis)
    return t


def _sweep_points(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df.error.fillna("") == ""].copy() if "error" in df else df.copy()
    ok["test accuracy (%)"] = ok.test_acc.astype(float) * 100
    ok["method"] = [TITLES.get(m, m) for m in ok.method]
    return ok


def _sweep_plot(points: pd.DataFrame, x: str, xlabel: str, log_base: float, label_points: str | None = None):
    """One line per method through the seed means, with a band of ± one standard deviation over seeds."""
    fig, ax = plt.subplots(figsize=(7, 4))
    palette = {t: style.color(k) for t, k in zip(points["method"], TITLES.keys_of(points["method"]), strict=True)}
    sns.lineplot(points, x=x, y="test accuracy (%)", hue="method", palette=palette, errorbar="sd", marker="o", ax=ax)
    if label_points:
        for (_, value), g in points.groupby(["method", label_points]):
            ax.annotate(
                f"P={int(value)}",
                (g[x].iloc[0], g["test accuracy (%)"].mean()),
                fontsize=8,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xscale("log", base=log_base)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%): seed mean, band ± 1 sd")
    ax.legend(title=None)
    fig.tight_layout()
    return fig


def plot_few_shot(df: pd.DataFrame):
    """Test accuracy against training images per class, mean ± std over seeds."""
    return _sweep_plot(_sweep_points(df), "train_per_class", "training images per class (log 2)", 2)


def plot_prompt_length(df: pd.DataFrame):
    """VPT test accuracy against trainable parameters, one point per prompt length."""
    points = _sweep_points(df).rename(columns={"trainable_params": "params"})
    return _sweep_plot(points, "params", "trainable parameters (log)", 10, label_points="prompt_tokens")


def sweep_budget_markdown() -> str:
    """How every sweep point is configured, stated from :mod:`vptlib.study.sweep`'s constants."""
    from vptlib.study.sweep import EPOCH_STEPS

    budget = {
        "full-split": (
            "an epoch is as many optimiser steps as one pass over the *whole* training split, so every "
            "K trains as many steps as the main table's run (a small training set is passed over many "
            "times per epoch) instead of a handful"
        ),
        "pass": "an epoch is one pass over the point's own training images, so small K trains fewer steps",
    }[EPOCH_STEPS]
    return (
        "Every point runs its method's main-table setting: the point its tuning grid chose on validation "
        "(or its profile setting when it has no grid), with only the swept axis changed. Its step budget: "
        f"{budget}. The table gives each method's setting and the optimiser steps each point took."
    )


def sweep_settings(df: pd.DataFrame, axis: str) -> pd.DataFrame:
    """One row per method: the setting every point of the sweep ran, and its optimiser steps per ``axis`` value."""
    ok = df[df.error.fillna("") == ""] if "error" in df else df
    rows = []
    for method, g in ok.groupby("method", sort=False):
        first, trained = g.iloc[0], bool((g.steps > 0).any())
        row = {
            "method": TITLES.get(method, method),
            "lr": f"{first.lr:g}" if trained else "–",
            "weight decay": f"{first.weight_decay:g}" if trained else "–",
            "optimizer": first.optimizer if trained else "–",
            "epochs": int(first.epochs) if trained else 0,
            "warm-up epochs": int(first.warmup) if trained else 0,
        }
        for value, h in g.groupby(axis):
            steps = sorted({int(s) for s in h.steps})
            row[f"optimiser steps at {AXES.get(axis, axis)}: {value}"] = "/".join(f"{s:,}" for s in steps)
        rows.append(row)
    settings = {"lr", "weight decay", "optimizer", "epochs", "warm-up epochs"}
    table = pd.DataFrame(rows).set_index("method")
    return grouped(table.rename(columns=lambda c: f"setting: {c}" if c in settings else c), decimals=None)


def sweep_failures_html(df: pd.DataFrame, axis: str) -> str:
    """A warning box listing every point of the sweep that failed or never ran, with its
    error; empty when all succeeded. Failed points are missing from the curve and the
    table above, so the page says which and why, never silently."""
    if "error" not in df:
        return ""
    bad = df[df.error.fillna("") != ""]
    if bad.empty:
        return ""
    import html

    rows = "".join(
        f"<li>{html.escape(TITLES.get(r.method, r.method))}, {axis} {html.escape(str(getattr(r, axis, '')))}, "
        f"seed {r.seed}: {html.escape(str(r.error))}</li>"
        for r in bad.itertuples()
    )
    return (
        '<div class="admonition warning"><p class="admonition-title">'
        f"{len(bad)} of {len(df)} points failed and are not in the curve or the table</p>"
        f"<ul>{rows}</ul><p>Rerun the sweep (<code>make sweep</code>) to retry them; finished points are reused.</p></div>"
    )
