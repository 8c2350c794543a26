"""Tables and figures for the book. Notebooks call these; the logic lives (and is tested) here.

Everything reads run records (:mod:`vptlib.records`) and the data manifest, never
notebook outputs, so a page can always be regenerated from ``runs/`` and ``data/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from . import records
from .classes import DISPLAY_NAMES
from .methods import METHODS
from .metrics import expected_calibration_error, holm, paired_difference, reliability, wilson_ci

# One theme for every statistical figure of the book, set once here.
sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9)

METHOD_ORDER = tuple(METHODS)
TITLES = {m: s.title for m, s in METHODS.items()}
# The earlier student report's test accuracies (STUDY.md section 5). A comparison column
# only: they come from an implementation with known bugs and test-set selection.
# Its "contrastive CLIP" used CLIP's in-batch loss (arange targets) with one text per class,
# the closest of our rows to FLYP (see the Discussion page).
EARLIER_REPORT = {"zero_shot": 29.69, "linear": 90.00, "vpt_shallow": 87.81, "vpt_deep": 84.69, "full": 89.69,
                  "flyp": 57.50}  # fmt: skip
STATIC_ENV = "VPTLIB_STATIC"
pd.set_option(
    "display.max_colwidth", 120
)  # tables in the book show whole sentences  # set while papermill executes for the book: no live widgets


def latest_run(runs: str | Path, profile: str, method: str) -> Path | None:
    """The newest finished run of ``method``, by creation (:func:`vptlib.records.run_order`)."""
    done = [p for p in records.run_dirs(Path(runs) / profile / method) if (p / records.METRICS).is_file()]
    return done[-1] if done else None


def latest_group(runs: str | Path, profile: str, method: str) -> list[Path]:
    """The runs (one per seed) behind ``method``'s row: its ``group.json``, else its newest run."""
    root = Path(runs) / profile / method
    group = root / records.GROUP
    if group.is_file():
        dirs = [root / name for name in json.loads(group.read_text())["runs"]]
        if all((d / records.METRICS).is_file() for d in dirs):
            return dirs
    newest = latest_run(runs, profile, method)
    return [newest] if newest else []


def latest_groups(runs: str | Path, profile: str) -> dict[str, list[Path]]:
    found = {m: latest_group(runs, profile, m) for m in METHOD_ORDER}
    return {m: g for m, g in found.items() if g}


def latest_runs(runs: str | Path, profile: str) -> dict[str, Path]:
    """The first seed's run of each method (curves, provenance)."""
    return {m: g[0] for m, g in latest_groups(runs, profile).items()}


def _changed(cfg: dict) -> str:
    keys = ("epochs", "lr", "optimizer", "batch_size", "precision", "seed")
    opts = ", ".join(f"{k}={v}" for k, v in sorted(cfg.get("method_options", {}).items())
                     if k not in ("class_names", "templates", "synonyms"))  # fmt: skip
    return ", ".join([f"{k}={cfg[k]}" for k in keys] + ([opts] if opts else []))


def summary(run_dir: str | Path) -> pd.DataFrame:
    """What the method trains and how many parameters, as a two-column table."""
    r = records.read_run(run_dir)
    c, m = r["config"], r["metrics"]
    rows = [
        ("method", TITLES.get(c["method"], c["method"])), ("trains", c["trains"]),
        ("trainable parameters", f"{m['trainable_params']:,}"), ("total parameters", f"{m['total_params']:,}"),
        ("trainable share", f"{m['trainable_params'] / m['total_params']:.4%}"),
        ("checkpoint size", _bytes(m["checkpoint_bytes"])), ("settings", _changed(c)),
        ("selected epoch (by validation)", str(m["best_epoch"])), ("run id", Path(run_dir).name),
        ("precision", m["precision"]), ("attention kernel", str(c.get("attention"))),
        ("device", m["device"]), ("model", c["model"]),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def plot_history(run_dir: str | Path):
    """Loss and accuracy per epoch for train, val and test; the selected epoch is marked."""
    r = records.read_run(run_dir)
    hist_path = Path(run_dir) / records.HISTORY
    curve = r["metrics"].get("wise_ft_curve")
    fig, axes = plt.subplots(1, 3 if curve else 2, figsize=(15 if curve else 10, 3.6))
    if not hist_path.is_file():
        for ax in axes:
            ax.text(0.5, 0.5, "no training: nothing to plot", ha="center", va="center")
            ax.set_axis_off()
        return fig
    h = pd.read_csv(hist_path)
    best = r["metrics"]["best_epoch"]
    for ax, what in zip(axes[:2], ("loss", "acc"), strict=True):
        ax.plot(h.epoch, h[f"train_{what}"], label="train (augmented, running)")
        ax.plot(h.epoch, h[f"val_{what}"], label="validation (selects the epoch)")
        if h[f"test_{what}"].notna().any():
            ax.plot(h.epoch, h[f"test_{what}"], "--", label="test (never used for selection)")
        ax.axvline(best, color="k", lw=0.8, ls=":", label=f"selected epoch {best}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy" if what == "loss" else "accuracy")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    if curve:  # WiSE-FT: the mixing coefficient, chosen on validation after training
        ax = axes[2]
        c = pd.DataFrame(curve)
        ax.plot(c.alpha, c.val_acc, marker="o", label="validation (chooses alpha)")
        ax.plot(c.alpha, c.test_acc, "--", marker=".", label="test (never used for selection)")
        ax.axvline(r["metrics"]["wise_ft_alpha"], color="k", lw=0.8, ls=":", label="chosen alpha")
        ax.set_xlabel("alpha (0: zero-shot, 1: fine-tuned)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def seed_table(results: list) -> pd.DataFrame:
    """One row per seed of an experiment: its run, selected epoch and accuracies."""
    rows = [{"seed": json.loads((r.run_dir / records.CONFIG).read_text())["seed"], "run id": r.run_dir.name,
             "selected epoch": r.metrics["best_epoch"],
             "val acc (%)": 100 * r.metrics["val"]["accuracy"] if r.metrics["val"] else np.nan,
             "test acc (%)": 100 * r.metrics["test"]["accuracy"], "test ECE": r.metrics["test"]["ece"]}
            for r in results]  # fmt: skip
    df = pd.DataFrame(rows).set_index("seed").round(3)
    if len(df) > 1:
        df.loc["mean ± std"] = ["", "", f"{df['val acc (%)'].mean():.2f} ± {df['val acc (%)'].std():.2f}",
                               f"{df['test acc (%)'].mean():.2f} ± {df['test acc (%)'].std():.2f}",
                               f"{df['test ECE'].mean():.3f}"]  # fmt: skip
    return df


def plot_confusion(run_dir: str | Path):
    r = records.read_run(run_dir)
    cm = np.array(r["metrics"]["test"]["confusion_matrix"])
    names = [DISPLAY_NAMES.get(c, c) for c in r["config"]["classes"]]
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    sns.heatmap(pd.DataFrame(cm, index=names, columns=names), annot=True, fmt="d", cmap="Blues", cbar=False,
                square=True, linewidths=0.5, ax=ax)  # fmt: skip
    ax.set_xticklabels(ax.get_xticklabels(), rotation=30, ha="right")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    return fig


def per_class_table(run_dir: str | Path) -> pd.DataFrame:
    m = records.read_run(run_dir)["metrics"]["test"]
    df = pd.DataFrame(m["per_class"]).T
    df.index = [DISPLAY_NAMES.get(c, c) for c in df.index]
    df["support"] = df["support"].astype(int)
    return df.round(3)


def timing_table(run_dir: str | Path) -> pd.DataFrame:
    m = records.read_run(run_dir)["metrics"]
    return pd.DataFrame({"seconds per epoch": [round(m["seconds_per_epoch"], 2)],
                         "training images per second": [round(m["images_per_second"], 1)],
                         "epochs run": [m["epochs_run"]], "device": [m["device"]],
                         "precision": [m["precision"]]})  # fmt: skip


def _predictions(run_dir: str | Path, split: str = "test") -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / records.PREDICTIONS).query("split == @split").reset_index(drop=True)


def misclassified(run_dir: str | Path, data_root: str | Path, n: int = 8):
    """A grid of wrongly classified test images with their true and predicted class."""
    p = _predictions(run_dir)
    wrong = p[p.true != p.pred].head(n)
    cols = max(1, min(4, len(wrong)))
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    if wrong.empty:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    for ax, (_, r) in zip(axes.ravel(), wrong.iterrows(), strict=False):
        ax.imshow(Image.open(Path(data_root) / r.path).convert("L"), cmap="gray")
        conf = r[f"prob_{r.pred}"]
        ax.set_title(f"true {DISPLAY_NAMES.get(r.true, r.true)}\npred {DISPLAY_NAMES.get(r.pred, r.pred)} ({conf:.2f})",
                     fontsize=8)  # fmt: skip
    fig.tight_layout()
    return fig


def prediction_explorer(run_dir: str | Path, data_root: str | Path):
    """An ipywidgets explorer of test predictions in a live notebook; a static table otherwise.

    The static build (papermill for the book, ``VPTLIB_STATIC=1``) gets the table, so the
    HTML needs no widget JavaScript from a CDN.
    """
    p = _predictions(run_dir)
    if os.environ.get(STATIC_ENV) == "1":
        return p[["path", "true", "pred", *[c for c in p.columns if c.startswith("prob_")]]].round(3).head(20)
    import ipywidgets as w
    from IPython.display import display

    classes = ["(any)", *sorted(p.true.unique())]
    true_dd = w.Dropdown(options=classes, description="true")
    pred_dd = w.Dropdown(options=classes, description="predicted")
    out = w.Output()

    def show(*_):
        sel = p
        if true_dd.value != "(any)":
            sel = sel[sel.true == true_dd.value]
        if pred_dd.value != "(any)":
            sel = sel[sel.pred == pred_dd.value]
        out.clear_output()
        with out:
            print(f"{len(sel)} images")
            if len(sel):
                display(misclassified_from(sel.head(8), data_root))

    true_dd.observe(show, "value")
    pred_dd.observe(show, "value")
    show()
    return w.VBox([w.HBox([true_dd, pred_dd]), out])


def misclassified_from(rows: pd.DataFrame, data_root: str | Path):
    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(2.4 * max(1, len(rows)), 2.6), squeeze=False)
    for ax, (_, r) in zip(axes.ravel(), rows.iterrows(), strict=False):
        ax.imshow(Image.open(Path(data_root) / r.path).convert("L"), cmap="gray")
        ax.set_title(f"{r.true} -> {r.pred}", fontsize=8)
        ax.set_axis_off()
    plt.close(fig)
    return fig


# ---------------------------------------------------------------- dataset page
def manifest(data_root: str | Path) -> pd.DataFrame:
    df = pd.read_csv(Path(data_root) / "manifest.csv", dtype=str, keep_default_na=False)
    chosen = df[df.split != "skipped"].copy()
    chosen["width"] = chosen.width.astype(int)
    chosen["height"] = chosen.height.astype(int)
    chosen["aspect"] = chosen.width / chosen.height
    chosen["label"] = chosen["class"].map(lambda c: DISPLAY_NAMES.get(c, c))
    return chosen


def sample_grid(data_root: str | Path, per_class: int = 4, seed: int = 0):
    df = manifest(data_root)
    classes = list(dict.fromkeys(df["class"]))
    fig, axes = plt.subplots(len(classes), per_class, figsize=(2 * per_class, 2.1 * len(classes)), squeeze=False)
    for i, c in enumerate(classes):
        rows = df[(df["class"] == c) & (df.split == "train")].sample(per_class, random_state=seed)
        for j, (_, r) in enumerate(rows.iterrows()):
            ax = axes[i, j]
            ax.imshow(Image.open(Path(data_root) / r.path).convert("L"), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(DISPLAY_NAMES.get(c, c))
    fig.tight_layout()
    return fig


def class_distribution(data_root: str | Path):
    df = manifest(data_root)
    counts = df[df.excluded == ""].groupby(["label", "split"]).size().unstack(fill_value=0)
    counts = counts[[s for s in ("train", "val", "test") if s in counts.columns]]
    ax = counts.plot.bar(figsize=(7, 3.2), rot=0)
    ax.set_ylabel("images")
    ax.set_xlabel("")
    ax.set_title("images per class and split")
    ax.figure.tight_layout()
    return ax.figure


def size_table(data_root: str | Path) -> pd.DataFrame:
    df = manifest(data_root)
    g = df.groupby("label")
    return pd.DataFrame({
        "images": g.size(), "median width": g.width.median(), "median height": g.height.median(),
        "share square": g.aspect.apply(lambda a: float(np.mean(np.isclose(a, 1.0, atol=0.02)))).round(3),
        "aspect min": g.aspect.min().round(3), "aspect max": g.aspect.max().round(3),
    })  # fmt: skip


def plot_sizes(data_root: str | Path):
    """Image size and aspect-ratio distributions per class: the shape shortcut, made visible."""
    df = manifest(data_root)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for label, g in df.groupby("label"):
        axes[0].scatter(g.width, g.height, s=10, alpha=0.6, label=label)
        axes[1].hist(g.aspect, bins=20, alpha=0.5, label=label)
    axes[0].set_xlabel("width (px)")
    axes[0].set_ylabel("height (px)")
    axes[1].set_xlabel("aspect ratio (width / height)")
    axes[1].set_ylabel("images")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def duplicates_table(data_root: str | Path) -> pd.DataFrame:
    path = Path(data_root) / "duplicates.csv"
    d = pd.read_csv(path, dtype=str) if path.is_file() else pd.DataFrame()
    if d.empty:
        return pd.DataFrame({"finding": ["no exact or near duplicates among the chosen images"]})
    d["where"] = np.where(d.a_split == d.b_split, "within " + d.a_split, d.a_split + " / " + d.b_split)
    return d.groupby(["kind", "where"]).size().rename("pairs").reset_index()


def skipped_table(data_root: str | Path) -> pd.DataFrame:
    df = pd.read_csv(Path(data_root) / "manifest.csv", dtype=str, keep_default_na=False)
    s = df[df.split == "skipped"]
    if s.empty:
        return pd.DataFrame({"finding": ["no file was skipped"]})
    return s[["source", "note"]].rename(columns={"note": "reason"})


# ---------------------------------------------------------------- results page
def _test_arrays(run_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, probabilities, classes) of a run's test predictions, sorted by path."""
    p = _predictions(run_dir).sort_values("path")
    classes = [c[5:] for c in p.columns if c.startswith("prob_")]
    labels = p.true.map({c: i for i, c in enumerate(classes)}).to_numpy()
    return labels, p[[f"prob_{c}" for c in classes]].to_numpy(), classes


def seed_correct(run_dirs: list[Path]) -> np.ndarray:
    """``(seeds, test images)`` booleans: which test images each seed's run gets right."""
    rows = []
    for d in run_dirs:
        labels, probs, _ = _test_arrays(d)
        rows.append(probs.argmax(1) == labels)
    return np.stack(rows)


def results_table(runs: str | Path, profile: str) -> pd.DataFrame:
    """One row per method over its seeds: mean +- std, and a 95% Wilson interval over test images."""
    rows = []
    for method, group in latest_groups(runs, profile).items():
        first = records.read_run(group[0])
        metrics = [records.read_run(d)["metrics"] for d in group]
        accs = np.array([m["test"]["accuracy"] for m in metrics])
        # test images are resampled; each image counts the share of seeds that get it right
        correct = seed_correct(group)
        lo, hi = wilson_ci(float(correct.mean()), correct.shape[1])
        rows.append({
            "method": TITLES[method], "seeds": len(group),
            "test acc (%)": 100 * accs.mean(),
            "± std": f"{100 * accs.std(ddof=1):.2f}" if len(accs) > 1 else "– (1 run)",
            "95% CI": f"{100 * lo:.1f}-{100 * hi:.1f}",
            "per seed (%)": ", ".join(f"{100 * a:.1f}" for a in accs),
            "balanced acc (%)": 100 * np.mean([m["test"]["balanced_accuracy"] for m in metrics]),
            "macro-F1": np.mean([m["test"]["macro_f1"] for m in metrics]),
            "ECE": np.mean([m["test"]["ece"] for m in metrics]),
            "train acc (%)": 100 * np.mean([m["train_accuracy"] for m in metrics]),
            "trainable params": first["metrics"]["trainable_params"],
            "checkpoint": _bytes(first["metrics"]["checkpoint_bytes"]),
            "s / epoch": np.mean([m["seconds_per_epoch"] for m in metrics]),
            "selected epoch": ", ".join(str(m["best_epoch"]) for m in metrics),
            "earlier report acc (%, not reproduced)": EARLIER_REPORT.get(method, "–"),
            "settings": _changed(first["config"]), "run id": ", ".join(d.name for d in group),
        })  # fmt: skip
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.round({"test acc (%)": 2, "train acc (%)": 2, "balanced acc (%)": 2, "macro-F1": 3,
                     "ECE": 3, "s / epoch": 2})  # fmt: skip


COMPARISON_RULE = (
    "Each method is compared with the reference method fixed in the profile before any result was seen "
    "(VPT-shallow unless the profile says otherwise), not with the test-set winner. The difference is that of "
    "the seed-mean test accuracies, on the same test images; its 95% interval is a paired bootstrap that "
    "resamples the test images and each method's seeds, and the p-value comes from the same bootstrap. "
    "The p-values are corrected for the number of comparisons (Holm), so the chance of calling any "
    "difference significant when none is real stays at 5%."
)


def significance_table(runs: str | Path, profile: str, reference: str = "vpt_shallow") -> pd.DataFrame:
    """Every method against the pre-registered ``reference``: paired differences, bootstrap CIs, Holm."""
    groups = latest_groups(runs, profile)
    if not groups:
        return pd.DataFrame()
    if reference not in groups:
        reference = next(iter(groups))  # e.g. a partial build: the first method present
    per_seed = {m: seed_correct(g) for m, g in groups.items()}
    rows = []
    for method in groups:
        if method == reference:
            continue
        d = paired_difference(per_seed[method], per_seed[reference])
        rows.append({
            "reference": TITLES[reference], "vs": TITLES[method], "difference (points)": round(100 * d["diff"], 2),
            "paired 95% CI": f"{100 * d['ci_low']:.1f} to {100 * d['ci_high']:.1f}", "p": d["p_value"],
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["Holm p"] = holm(list(table["p"]))
    table["significant (Holm, 5%)"] = np.where(table["Holm p"] < 0.05, "yes", "no")
    return table.round({"p": 4, "Holm p": 4})


def significance_display(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index(["reference", "vs"]) if not table.empty else table


def _signed(table: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    sig = table["significant (Holm, 5%)"] == "yes"
    better = list(table.loc[sig & (table["difference (points)"] > 0), "vs"])
    worse = list(table.loc[sig & (table["difference (points)"] < 0), "vs"])
    return better, worse, list(table.loc[~sig, "vs"])


def significance_sentence(table: pd.DataFrame) -> str:
    """What the table says, following each difference's sign and its corrected p-value."""
    if table.empty:
        return "There is only one method, so there is nothing to compare."
    ref = table["reference"].iloc[0]
    better, worse, same = _signed(table)
    parts = [f"Reference: {ref}."]
    if better:
        parts.append(f"Significantly more accurate than it after the Holm correction: {', '.join(better)}.")
    if worse:
        parts.append(f"Significantly less accurate: {', '.join(worse)}.")
    if same:
        parts.append(f"Not distinguishable from it on this test set: {', '.join(same)}; the table's ranking among "
                     "these should not be read as real.")  # fmt: skip
    return " ".join(parts)


def test_looks(runs: str | Path, profile: str) -> pd.DataFrame:
    """Per method: how many distinct settings (seeds aside) were evaluated on test, from the ledger."""
    ledger = pd.DataFrame(records.read_ledger(Path(runs) / profile))
    if ledger.empty:
        return pd.DataFrame(columns=["settings evaluated on test", "test evaluations"])
    g = ledger.groupby("method")
    out = pd.DataFrame({"settings evaluated on test": g.settings.nunique(), "test evaluations": g.size()})
    out = out.reindex([m for m in METHOD_ORDER if m in out.index])
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
    return ('<div class="admonition tip"><p class="admonition-title">Key findings</p><ul>'
            + "".join(items) + "</ul></div>")  # fmt: skip


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
    lines.append(f"- **Highest mean test accuracy:** {best}, {acc[best]:.1f}%.")
    if not table.empty:
        better, worse, _ = _signed(table)
        survived = [f"{m} (better)" for m in better] + [f"{m} (worse)" for m in worse]
        lines.append("- **Differences from the reference that survive the Holm correction:** "
                     + (", ".join(survived) if survived else "none") + ".")  # fmt: skip
    return "\n".join(lines)


def plot_acc_vs_params(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for _, r in table.iterrows():
        x = max(r["trainable params"], 1)
        ax.scatter(x, r["test acc (%)"], s=40)
        ax.annotate(r["method"], (x, r["test acc (%)"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log; zero-shot drawn at 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_val_curves(runs: str | Path, profile: str):
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for method, run_dir in latest_runs(runs, profile).items():
        h = Path(run_dir) / records.HISTORY
        if h.is_file():
            df = pd.read_csv(h)
            ax.plot(df.epoch, df.val_acc, marker=".", label=TITLES[method])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_reliability(runs: str | Path, profile: str):
    """One reliability diagram per method (first seed), its ECE in the title.

    Bars span the 10 confidence bins; a dot marks each bin's mean confidence, so a
    calibrated bin has its dot on the diagonal."""
    runs_ = latest_runs(runs, profile)
    n = max(1, len(runs_))
    cols = min(4, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(2.6 * cols, 2.6 * ((n + cols - 1) // cols)),
                             squeeze=False, sharex=True, sharey=True)  # fmt: skip
    for ax, (method, run_dir) in zip(axes.flat, runs_.items(), strict=False):
        labels, probs, _ = _test_arrays(run_dir)
        rel = reliability(probs, labels)
        n = len(rel["accuracy"])
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.bar((np.arange(n) + 0.5) / n, rel["accuracy"], width=1 / n, alpha=0.6, edgecolor="white")
        ax.plot(rel["confidence"], rel["accuracy"], "k.", ms=4)  # each bin's mean confidence
        ax.set_title(f"{TITLES[method]}\nECE {expected_calibration_error(probs, labels):.3f}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(runs_) :]:
        ax.axis("off")
    fig.supxlabel("confidence", fontsize=9)
    fig.supylabel("accuracy", fontsize=9)
    fig.tight_layout()
    return fig


def short_commit(commit: str) -> str:
    """12 hex digits, keeping the ``-dirty`` mark of a run made from uncommitted code."""
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:12] + ("-dirty" if dirty else "")


def provenance(runs: str | Path, profile: str) -> pd.DataFrame:
    rows = []
    for method, run_dir in latest_runs(runs, profile).items():
        c = json.loads((Path(run_dir) / records.CONFIG).read_text())
        rows.append({"method": TITLES[method], "run id": run_dir.name, "git commit": short_commit(c["git_commit"]),
                     "model": c["model"], "model fingerprint": c["model_fingerprint"],
                     "manifest hash": c["manifest_hash"], "device": c["device"],
                     "torch": c["versions"]["torch"], "transformers": c["versions"]["transformers"]})  # fmt: skip
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- reproducibility page
_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "weight_decay": "--weight-decay",
          "optimizer": "--optimizer", "schedule": "--schedule", "warmup": "--warmup", "seed": "--seed",
          "precision": "--precision", "grad_clip": "--grad-clip", "early_stopping": "--early-stopping",
          "train_per_class": "--train-per-class"}  # fmt: skip


def run_command(config: dict) -> str:
    """The `vptlib run` command line that repeats a recorded run."""
    parts = ["vptlib run", f"--method {config['method']}", f"--data {config['data']}", f"--model {config['model']}"]
    parts += [f"{flag} {config[k]}" for k, flag in _FLAGS.items() if config.get(k) is not None]
    from .cli import METHOD_FLAGS  # the flags `vptlib run` defines, so the command always parses

    opts = config.get("method_options", {})
    parts += [f"{flag} {opts[k]}" for k, (flag, _, _) in METHOD_FLAGS.items() if k in opts]
    if opts.get("through_backbone"):
        parts.append("--through-backbone")
    if not config.get("augment", True):
        parts.append("--no-augment")
    parts += [flag for k, flag in (("test_curves", "--test-curves"), ("compile", "--compile")) if config.get(k)]
    parts += [f"--profile {config['profile']}", f"--out {config['out']}"]
    return " ".join(parts)


def run_commands_markdown(runs: str | Path, profile: str) -> str:
    lines = []
    for method, run_dir in latest_runs(runs, profile).items():
        cfg = records.read_run(run_dir)["config"]
        lines += [f"**{TITLES[method]}** (`{run_dir.name}`)", "", "```bash", run_command(cfg), "```", ""]
    return "\n".join(lines)


def commands_markdown(profile: str) -> str:
    return "\n".join([
        "```bash", f"make book PROFILE={profile}",
        f'make run PROFILE={profile} NB=vpt_deep ARGS="-p prompt_tokens 10 -p lr 0.5"',
        f"make book PROFILE={profile}   # re-executes only that page, the results and this page", "```",
    ])  # fmt: skip


def environment_table() -> pd.DataFrame:
    v = records.versions()
    import torch

    v["CUDA available"] = str(torch.cuda.is_available())
    v["CPU threads"] = str(torch.get_num_threads())
    return pd.DataFrame({"value": v})


def benchmark_markdown(folder: str | Path | None = None) -> str:
    """The newest `make bench` table (benchmarks/results/*.md), or how to produce one."""
    folder = Path(folder) if folder else Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    tables = sorted((p for p in folder.glob("*.md") if not p.stem.endswith("-tiny")), key=lambda p: p.stat().st_mtime)
    if not tables:
        return "No benchmark has been recorded yet: run `make bench`."
    return f"From `benchmarks/results/{tables[-1].name}`, written by `make bench`:\n\n" + tables[-1].read_text()


# ---------------------------------------------------------------- data checks
def dedup_table(runs: str | Path, profile: str, data_root: str | Path) -> pd.DataFrame:
    """Each method's test accuracy on the raw and on the de-duplicated test set (first seed)."""
    from .shortcuts import dedup_accuracy

    preds = {TITLES[m]: _predictions(d) for m, d in latest_runs(runs, profile).items()}
    if not preds:
        return pd.DataFrame({"finding": ["no finished runs yet"]})
    return dedup_accuracy(preds, data_root).set_index("method")


def shape_floor_markdown(data_root: str | Path) -> str:
    from .shortcuts import shape_floor

    r = shape_floor(manifest(data_root))
    return (f"A classifier that sees only each image's original width, height and aspect ratio "
            f"(gradient-boosted trees, trained on train + validation) reaches **{100 * r['accuracy']:.1f}%** test "
            f"accuracy (95% CI {100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}%, {r['test_images']} images); "
            f"always answering the most common class gives {100 * r['majority_rate']:.1f}%. A model that does "
            f"not clearly beat the first number may be reading image shape rather than anatomy.")  # fmt: skip


# ---------------------------------------------------------------- curves page
def _sweep_stats(df: pd.DataFrame, axis: str) -> pd.DataFrame:
    ok = df[df.error.fillna("") == ""].copy() if "error" in df else df.copy()
    ok["test_acc"] = ok.test_acc.astype(float) * 100
    g = ok.groupby(["method", axis])
    out = g.agg(mean=("test_acc", "mean"), std=("test_acc", "std"), seeds=("test_acc", "size"),
                params=("trainable_params", "first")).reset_index()  # fmt: skip
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
            ax.annotate(f"P={int(value)}", (g[x].iloc[0], g["test accuracy (%)"].mean()), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
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


def plot_accuracy(table: pd.DataFrame):
    """Each method's seed-mean test accuracy with its 95% Wilson interval (the main table's CI)."""
    t = table.copy()
    t[["lo", "hi"]] = [[float(v) for v in ci.split("-")] for ci in t["95% CI"]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(t) + 1.2))
    sns.barplot(t, y="method", x="test acc (%)", hue="method", legend=False, ax=ax, orient="h")
    ax.errorbar(t["test acc (%)"], range(len(t)), xerr=[t["test acc (%)"] - t.lo, t.hi - t["test acc (%)"]],
                fmt="none", ecolor="black", capsize=3, lw=1)  # fmt: skip
    ax.set_xlim(0, 100)
    ax.set_xlabel("test accuracy (%), seed mean with 95% CI")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- where the model looks
ATTENTION_METHODS = ("linear", "vpt_shallow", "vpt_deep", "full")


def _attention_inputs(data_root: str | Path, run_dir: Path, per_class: int):
    import torch

    from .backbone import load_clip
    from .dataset import Preprocess, load_data, normalize

    cfg = records.read_run(run_dir)["config"]
    clip = load_clip(cfg["model"])
    data = load_data(data_root, Preprocess.from_processor(clip.processor))
    labels = data.test.labels
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(len(data.classes))])
    return clip, data, idx, normalize(data.test.pixels[idx], data.prep)


def attention_maps(runs: str | Path, profile: str, data_root: str | Path, methods=ATTENTION_METHODS,
                   per_class: int = 2) -> dict:  # fmt: skip
    """Last-layer CLS attention of each method's first-seed run on the same test images."""
    from .attention import cls_attention

    found = {m: d for m, d in latest_runs(runs, profile).items() if m in methods}
    if not found:
        return {}
    clip, data, idx, x = _attention_inputs(data_root, next(iter(found.values())), per_class)
    out = {"images": data.test.pixels[idx], "labels": [data.classes[int(i)] for i in data.test.labels[idx]],
           "paths": [data.test.paths[int(i)] for i in idx], "maps": {}, "prompts": {}}  # fmt: skip
    for method, run_dir in found.items():
        model, _ = records.load_run(run_dir, clip=clip)
        att = cls_attention(model, x)
        out["maps"][method] = att.to_patches[-1]
        out["prompts"][method] = att.to_prompts  # (layers, images)
    return out


def plot_attention(maps: dict):
    """Each test image with each method's last-layer CLS-to-patch attention overlaid."""
    if not maps:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.text(0.5, 0.5, "no finished runs of these methods", ha="center")
        ax.set_axis_off()
        return fig
    methods = list(maps["maps"])
    n = len(maps["labels"])
    fig, axes = plt.subplots(n, 1 + len(methods), figsize=(1.9 * (1 + len(methods)), 1.9 * n), squeeze=False)
    for i in range(n):
        img = maps["images"][i].float().mean(0).numpy()
        axes[i, 0].imshow(img, cmap="gray")
        axes[i, 0].set_ylabel(DISPLAY_NAMES.get(maps["labels"][i], maps["labels"][i]), fontsize=8)
        for j, m in enumerate(methods, start=1):
            a = maps["maps"][m][i]
            axes[i, j].imshow(img, cmap="gray")
            axes[i, j].imshow(a / a.max(), cmap="inferno", alpha=0.55, extent=(0, img.shape[1], img.shape[0], 0),
                              interpolation="bilinear")  # fmt: skip
    for j, title in enumerate(["image", *[TITLES[m] for m in methods]]):
        axes[0, j].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_prompt_attention(maps: dict):
    """Share of the CLS token's attention that goes to the prompt tokens, per layer (VPT)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for m, share in (maps.get("prompts") or {}).items():
        if np.asarray(share).max() > 0:
            mean, std = np.asarray(share).mean(1), np.asarray(share).std(1)
            layers = np.arange(1, len(mean) + 1)
            ax.errorbar(layers, 100 * mean, yerr=100 * std, marker="o", capsize=3, label=TITLES[m])
    ax.set_xlabel("layer")
    ax.set_ylabel("CLS attention to prompts (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
