"""The Curves page: accuracy against training images per class and against prompt length."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .loading import TITLES


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


def sweep_table(df: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Mean ± std test accuracy over seeds, one column per value of ``axis``."""
    st = _sweep_stats(df, axis)
    st["cell"] = [f"{m:.1f} ± {s:.1f} (n={n})" for m, s, n in zip(st["mean"], st["std"], st.seeds, strict=True)]
    t = st.pivot(index="method", columns=axis, values="cell")
    t.index = [TITLES.get(m, m) for m in t.index]
    return t


def _sweep_points(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df.error.fillna("") == ""].copy() if "error" in df else df.copy()
    ok["test accuracy (%)"] = ok.test_acc.astype(float) * 100
    ok["method"] = [TITLES.get(m, m) for m in ok.method]
    return ok


def _sweep_plot(points: pd.DataFrame, x: str, xlabel: str, log_base: float, label_points: str | None = None):
    """One line per method through the seed means, with a band of ± one standard deviation over seeds."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(points, x=x, y="test accuracy (%)", hue="method", errorbar="sd", marker="o", ax=ax)
    if label_points:
        for (_, value), g in points.groupby(["method", label_points]):
            ax.annotate(
                f"P={int(value)}",
                (g[x].iloc[0], g["test accuracy (%)"].mean()),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xscale("log", base=log_base)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%): seed mean, band ± 1 sd")
    ax.legend(fontsize=8, title=None)
    fig.tight_layout()
    return fig


def plot_few_shot(df: pd.DataFrame):
    """Test accuracy against training images per class, mean ± std over seeds."""
    return _sweep_plot(_sweep_points(df), "train_per_class", "training images per class (log 2)", 2)


def plot_prompt_length(df: pd.DataFrame):
    """VPT test accuracy against trainable parameters, one point per prompt length."""
    points = _sweep_points(df).rename(columns={"trainable_params": "params"})
    return _sweep_plot(points, "params", "trainable parameters (log)", 10, label_points="prompt_tokens")
