"""What every page reads: the runs behind each method's row, their predictions, the data manifest."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vptlib.data.classes import DISPLAY_NAMES
from vptlib.errors import UserError
from vptlib.methods import METHODS
from vptlib.paths import component, inside
from vptlib.runs import records
from vptlib.runs.metrics import classification_report


class Registry(Mapping):
    """The report's one view of the method registry, read at every look-up (a method registered
    later is in it): method key -> title, in report order, and the way back from a title."""

    def __getitem__(self, method: str) -> str:
        return METHODS[method].title

    def __iter__(self) -> Iterator[str]:
        return iter(METHODS)

    def __len__(self) -> int:
        return len(METHODS)

    @property
    def order(self) -> tuple[str, ...]:
        """The registry's methods in report order."""
        return tuple(METHODS)

    def keys_of(self, titles: Iterable[str]) -> list[str]:
        """The keys of methods named by their titles (a table's ``method`` column)."""
        by_title = {spec.title: key for key, spec in METHODS.items()}
        return [by_title[t] for t in titles]


TITLES = Registry()
# The earlier student report's test accuracies (STUDY.md section 5). A comparison column
# only: they come from an implementation with known bugs and test-set selection.
# Its "contrastive CLIP" used CLIP's in-batch loss (arange targets) with one text per class,
# the closest of our rows to FLYP (see the Discussion page).


EARLIER_REPORT = {
    "zero_shot": 29.69,
    "linear": 90.00,
    "vpt_shallow": 87.81,
    "vpt_deep": 84.69,
    "full": 89.69,
    "flyp": 57.50,
}


STATIC_ENV = "VPTLIB_STATIC"


def latest_run(runs: str | Path, profile: str, method: str) -> Path | None:
    """The newest finished run of ``method``, by creation (:func:`vptlib.runs.records.run_order`)."""
    done = [
        p for p in records.run_dirs(records.method_folder(runs, profile, method)) if (p / records.METRICS).is_file()
    ]
    return done[-1] if done else None


def latest_group(runs: str | Path, profile: str, method: str) -> list[Path]:
    """The runs (one per seed) behind ``method``'s row: its ``group.json``, else its newest run."""
    root = records.method_folder(runs, profile, method)
    group = root / records.GROUP
    if group.is_file():
        dirs = _group_dirs(root, group)
        if all((d / records.METRICS).is_file() for d in dirs):
            return dirs
    newest = latest_run(runs, profile, method)
    return [newest] if newest else []


def _group_dirs(root: Path, group: Path) -> list[Path]:
    """The run folders ``group.json`` names: each a run id inside ``root``, each seed once."""
    try:
        info = json.loads(group.read_text())
        names = list(info["runs"])
        seeds = list(info.get("seeds", range(len(names))))  # a group file of an earlier version had no seeds
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{group} is damaged; rerun the method's page (make run NB={root.name})") from None
    for name in names:
        component(name, f"{group}: run id")
        inside(root, name, f"{group}: run")
    if len(set(names)) != len(names) or len(set(map(str, seeds))) != len(seeds) or len(seeds) != len(names):
        raise UserError(f"{group} names a run or a seed twice ({names}, seeds {seeds}): one run per seed")
    return [root / name for name in names]


def verified_metrics(run_dir: Path) -> dict:
    """A run's ``metrics.json``, refused when its test numbers are not those of its own
    ``predictions.csv``: a published number is always one the predictions support."""
    metrics = records.read_run(run_dir)["metrics"]
    recorded = metrics.get("test")
    if not recorded:
        return metrics
    labels, probs, classes = scored_arrays(run_dir)
    again = classification_report(labels, probs, tuple(classes))
    for key, value in again.items():  # every number it records (an older record may lack a newer key)
        if (key in recorded or key == "accuracy") and not _same(recorded.get(key), value):
            raise UserError(
                f"{run_dir}: metrics.json gives test {key} {recorded.get(key)!r} but its predictions.csv "
                f"gives {value!r}; the record was altered or damaged: delete the run folder and rerun it"
            )
    return metrics


def _same(a: Any, b: Any) -> bool:
    """Equal numbers (to 1e-6), or equal nested lists and dicts of them."""
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    try:
        return bool(np.isclose(float(a), float(b), rtol=0, atol=1e-6))
    except (TypeError, ValueError):
        return a == b


def verified_run(run_dir: Path) -> dict:
    """:func:`vptlib.runs.records.read_run` with its metrics checked by :func:`verified_metrics`."""
    return {**records.read_run(run_dir), "metrics": verified_metrics(Path(run_dir))}


def latest_groups(runs: str | Path, profile: str) -> dict[str, list[Path]]:
    found = {m: latest_group(runs, profile, m) for m in TITLES.order}
    return {m: g for m, g in found.items() if g}


def latest_runs(runs: str | Path, profile: str) -> dict[str, Path]:
    """The first seed's run of each method (curves, provenance)."""
    return {m: g[0] for m, g in latest_groups(runs, profile).items()}


def size_text(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def predictions(run_dir: str | Path, split: str = "test") -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / records.PREDICTIONS).query("split == @split").reset_index(drop=True)


def manifest(data_root: str | Path) -> pd.DataFrame:
    df = pd.read_csv(Path(data_root) / "manifest.csv", dtype=str, keep_default_na=False)
    chosen = df[df.split != "skipped"].copy()
    chosen["width"] = chosen.width.astype(int)
    chosen["height"] = chosen.height.astype(int)
    chosen["aspect"] = chosen.width / chosen.height
    chosen["label"] = chosen["class"].map(lambda c: DISPLAY_NAMES.get(c, c))
    return chosen


def scored_arrays(run_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, probabilities, classes) of a run's test predictions, sorted by path."""
    p = predictions(run_dir).sort_values("path")
    classes = [c[5:] for c in p.columns if c.startswith("prob_")]
    labels = p.true.map({c: i for i, c in enumerate(classes)}).to_numpy()
    return labels, p[[f"prob_{c}" for c in classes]].to_numpy(), classes


def seed_correct(run_dirs: list[Path]) -> np.ndarray:
    """``(seeds, test images)`` booleans: which test images each seed's run gets right,
    column ``j`` the same image in every row (:func:`same_test_images` checks it)."""
    same_test_images(run_dirs)
    rows = []
    for d in run_dirs:
        labels, probs, _ = scored_arrays(d)
        rows.append(probs.argmax(1) == labels)
    return np.stack(rows)


def same_test_images(run_dirs: list[Path]) -> None:
    """Refuse runs that were not scored on the same test images with the same labels: a
    paired comparison of two runs pairs image ``j`` with image ``j``, and equal counts alone
    do not make them the same images (another data folder, another draw)."""
    first = None
    for d in run_dirs:
        p = predictions(d).sort_values("path")
        items = list(zip(p.path.astype(str), p.true.astype(str), strict=True))
        if first is None:
            first = (d, items)
            continue
        if items != first[1]:
            differ = len(set(first[1]) ^ set(items))
            raise UserError(
                f"runs {first[0].name} and {d.name} were tested on different test images "
                f"({len(first[1])} and {len(items)} images, {differ} not in both): a paired comparison needs "
                "the same test split; rerun one of them on the other's data folder"
            )


def short_commit(commit: str) -> str:
    """12 hex digits, keeping the ``-dirty`` mark of a run made from uncommitted code."""
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:12] + ("-dirty" if dirty else "")


# What the settings column shows of a run's config: everything the optimisation depends on
# (a method that trains nothing shows only what it has).
SETTINGS = (
    "epochs",
    "lr",
    "weight_decay",
    "optimizer",
    "schedule",
    "warmup",
    "grad_clip",
    "batch_size",
    "epoch_steps",
    "precision",
    "seed",
)
# A run fitted once, without epochs (zero-shot, GDA, the L-BFGS probe): the optimiser's
# settings never acted, so they are not shown as its settings.
UNTRAINED_SETTINGS = ("batch_size", "precision")


def by_epochs(metrics: dict) -> bool:
    """Whether a run trained by epochs; False for a fit without any (``epochs_run`` 0)."""
    return bool(metrics.get("epochs_run"))


def changed_settings(cfg: dict, metrics: dict | None = None) -> str:
    """The settings a run's numbers depend on; ``metrics``: its record, so a run fitted without
    epochs (the L-BFGS probe) does not list the optimiser settings it never used."""
    trained = by_epochs(metrics) if metrics is not None else bool(cfg.get("epochs"))
    keys = SETTINGS if trained else UNTRAINED_SETTINGS
    opts = ", ".join(
        f"{k}={v}"
        for k, v in sorted(cfg.get("method_options", {}).items())
        if k not in ("class_names", "templates", "synonyms")
    )
    shown = [f"{k}={cfg[k]:g}" if isinstance(cfg.get(k), float) else f"{k}={cfg[k]}" for k in keys if k in cfg]
    return ", ".join(shown + ([opts] if opts else []))


def grid_size(runs: str | Path, profile: str, method: str) -> int:
    """How many settings were tried on validation for ``method``'s row (its tuning grid's
    points; 1 for a method with no grid), read from the grid the row was chosen from."""
    from vptlib.runs import records
    from vptlib.study.tuning import TUNING

    grid = records.method_folder(runs, profile, method) / TUNING
    return len(pd.read_csv(grid)) if grid.is_file() else 1


def optimiser_steps(run_dir: Path) -> int:
    """The optimiser steps a run took (its last epoch's count; 0 for a closed-form fit)."""
    from vptlib.runs.records import read_history

    history = read_history(run_dir)
    return int(history["steps"].iloc[-1]) if "steps" in history and len(history) else 0
