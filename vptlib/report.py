"""Tables and figures for the book. Notebooks call these; the logic lives (and is tested) here.

Everything reads run records (:mod:`vptlib.records`) and the data manifest, never
notebook outputs, so a page can always be regenerated from ``runs/`` and ``data/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from . import records
from .classes import DISPLAY_NAMES
from .engine import RunConfig
from .metrics import mcnemar, paired_bootstrap, reliability

METHOD_ORDER = ("zero_shot", "linear", "vpt_shallow", "vpt_deep", "full", "clip_contrastive")
TITLES = {
    "zero_shot": "Zero-shot CLIP",
    "linear": "Linear probe",
    "vpt_shallow": "VPT-shallow",
    "vpt_deep": "VPT-deep",
    "full": "Full fine-tuning",
    "clip_contrastive": "Contrastive fine-tuning (FLYP-style)",
}
# The earlier student report's test accuracies (STUDY.md section 5). A comparison column
# only: they come from an implementation with known bugs and test-set selection.
EARLIER_REPORT = {"zero_shot": 29.69, "linear": 90.00, "vpt_shallow": 87.81, "vpt_deep": 84.69, "full": 89.69,
                  "clip_contrastive": 57.50}  # fmt: skip
STATIC_ENV = "VPTLIB_STATIC"
pd.set_option(
    "display.max_colwidth", 120
)  # tables in the book show whole sentences  # set while papermill executes for the book: no live widgets


def run_config(method: str, hparams: dict | None = None, **fields: Any) -> RunConfig:
    """A RunConfig from a profile's shared fields, its per-method ``hparams`` and overrides.

    ``None`` values are ignored, so a notebook can pass every parameter it has.
    Method options (``prompt_tokens``, ...) may appear at any level.
    """
    merged = {**(hparams or {}).get(method, {}), **{k: v for k, v in fields.items() if v is not None}}
    known = set(RunConfig.__dataclass_fields__)
    options = {**merged.pop("options", {}), **{k: merged.pop(k) for k in list(merged) if k not in known}}
    return RunConfig(method=method, options=options, **merged)


def latest_run(runs: str | Path, profile: str, method: str) -> Path | None:
    """The newest finished run of ``method`` (run ids sort by time)."""
    root = Path(runs) / profile / method
    done = sorted(p for p in root.glob("*") if (p / records.METRICS).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def latest_runs(runs: str | Path, profile: str) -> dict[str, Path]:
    found = {m: latest_run(runs, profile, m) for m in METHOD_ORDER}
    return {m: p for m, p in found.items() if p is not None}


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
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if not hist_path.is_file():
        for ax in axes:
            ax.text(0.5, 0.5, "no training: nothing to plot", ha="center", va="center")
            ax.set_axis_off()
        return fig
    h = pd.read_csv(hist_path)
    best = r["metrics"]["best_epoch"]
    for ax, what in zip(axes, ("loss", "acc"), strict=True):
        ax.plot(h.epoch, h[f"train_{what}"], label="train (augmented, running)")
        ax.plot(h.epoch, h[f"val_{what}"], label="validation (selects the epoch)")
        if h[f"test_{what}"].notna().any():
            ax.plot(h.epoch, h[f"test_{what}"], "--", label="test (never used for selection)")
        ax.axvline(best, color="k", lw=0.8, ls=":", label=f"selected epoch {best}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy" if what == "loss" else "accuracy")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_confusion(run_dir: str | Path):
    r = records.read_run(run_dir)
    cm = np.array(r["metrics"]["test"]["confusion_matrix"])
    names = [DISPLAY_NAMES.get(c, c) for c in r["config"]["classes"]]
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, cm[i, j], ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
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
def results_table(runs: str | Path, profile: str) -> pd.DataFrame:
    """One row per method from its newest finished run, with the run id and its settings."""
    rows = []
    for method, run_dir in latest_runs(runs, profile).items():
        r = records.read_run(run_dir)
        m, c, t = r["metrics"], r["config"], r["metrics"]["test"]
        lo, hi = t["accuracy_ci95"]
        rows.append({
            "method": TITLES[method], "test acc (%)": 100 * t["accuracy"],
            "95% CI": f"{100 * lo:.1f}-{100 * hi:.1f}", "train acc (%)": 100 * m["train_accuracy"],
            "balanced acc (%)": 100 * t["balanced_accuracy"], "macro-F1": t["macro_f1"],
            "trainable params": m["trainable_params"], "checkpoint": _bytes(m["checkpoint_bytes"]),
            "s / epoch": m["seconds_per_epoch"], "selected epoch": m["best_epoch"],
            "earlier report acc (%, not reproduced)": EARLIER_REPORT.get(method, np.nan),
            "settings": _changed(c), "run id": run_dir.name,
        })  # fmt: skip
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.round({"test acc (%)": 2, "train acc (%)": 2, "balanced acc (%)": 2, "macro-F1": 3, "s / epoch": 2})


def significance_table(runs: str | Path, profile: str) -> pd.DataFrame:
    """Each method against the best one on the same test images: McNemar and a paired bootstrap."""
    found = latest_runs(runs, profile)
    correct = {}
    for method, run_dir in found.items():
        p = _predictions(run_dir)
        correct[method] = (p.true == p.pred).to_numpy()
    if not correct:
        return pd.DataFrame()
    best = max(correct, key=lambda k: correct[k].mean())
    rows = []
    for method, c in correct.items():
        if method == best:
            continue
        mc = mcnemar(correct[best], c)
        pb = paired_bootstrap(correct[best], c)
        rows.append({
            "best": TITLES[best], "vs": TITLES[method], "difference (points)": round(100 * pb["diff"], 2),
            "paired 95% CI": f"{100 * pb['ci_low']:.1f} to {100 * pb['ci_high']:.1f}",
            "McNemar p": round(mc["p_value"], 4), "significant at 5%": "yes" if mc["p_value"] < 0.05 else "no",
        })  # fmt: skip
    return pd.DataFrame(rows)


def significance_display(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index(["best", "vs"]) if not table.empty else table


def significance_sentence(table: pd.DataFrame) -> str:
    if table.empty:
        return "There is only one method, so there is nothing to compare."
    best = table["best"].iloc[0]
    sig = list(table.loc[table["significant at 5%"] == "yes", "vs"])
    ns = list(table.loc[table["significant at 5%"] == "no", "vs"])
    parts = [f"{best} has the highest test accuracy."]
    if sig:
        parts.append(f"Its lead is significant at the 5% level (exact McNemar test) over {', '.join(sig)}.")
    if ns:
        parts.append(f"It is not significantly better than {', '.join(ns)}: those differences are within "
                     "the noise of this test set, and the table's ranking among them should not be read as real.")  # fmt: skip
    return " ".join(parts)


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
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    for method, run_dir in latest_runs(runs, profile).items():
        p = _predictions(run_dir)
        classes = [c[5:] for c in p.columns if c.startswith("prob_")]
        probs = p[[f"prob_{c}" for c in classes]].to_numpy()
        labels = p.true.map({c: i for i, c in enumerate(classes)}).to_numpy()
        rel = reliability(probs, labels)
        ax.plot(rel["confidence"], rel["accuracy"], marker="o", ms=3, label=TITLES[method])
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
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
          "precision": "--precision", "grad_clip": "--grad-clip", "early_stopping": "--early-stopping"}  # fmt: skip
_OPTION_FLAGS = {"prompt_tokens": "--prompt-tokens", "prompt_dropout": "--prompt-dropout",
                 "backbone_lr_scale": "--backbone-lr-scale", "lp_ft": "--lp-ft"}  # fmt: skip


def run_command(config: dict) -> str:
    """The `vptlib run` command line that repeats a recorded run."""
    parts = ["vptlib run", f"--method {config['method']}", f"--data {config['data']}", f"--model {config['model']}"]
    parts += [f"{flag} {config[k]}" for k, flag in _FLAGS.items() if config.get(k) is not None]
    opts = config.get("method_options", {})
    parts += [f"{flag} {opts[k]}" for k, flag in _OPTION_FLAGS.items() if k in opts]
    if opts.get("through_backbone"):
        parts.append("--through-backbone")
    if opts.get("symmetric"):
        parts.append("--symmetric")
    if not config.get("augment", True):
        parts.append("--no-augment")
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
