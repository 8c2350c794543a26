"""Hyper-parameters chosen on validation by the study itself, never on test.

A profile's ``grids`` give each trained method a small grid (for example learning rate x
weight decay, as the official VPT code sweeps them). :func:`tune` trains every point once,
with the profile's tuning seed (``Profile.grid_seed``, never a reported seed) and
``evaluate_test=False`` (the test split is not even staged), and chooses the point with
the best validation accuracy (:mod:`vptlib.selection`; ties: lower validation loss, then
the earlier point). :func:`run_method` then runs every reported seed afresh with the
chosen setting. So no grid point is a reported run: the winner's luck on its own seed,
which is why it won, is not in the reported mean, and no run that lost on validation
ever sees test.

Grid points are ordinary runs: a finished one is reused by the same code, an interrupted
one resumes. An override given by the user (``make run ARGS="-p lr 0.5"``) fixes that
axis, and the grid spans the others.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vptlib import atomic
from vptlib.runs import records
from vptlib.runs.config import RunConfig
from vptlib.runs.engine import run, run_seeds
from vptlib.runs.records import RunResult
from vptlib.selection import best_index

from .profile import Profile

TUNING = "tuning.csv"  # runs/<profile>/<method>/tuning.csv: the grid of the method's current row


@dataclass
class Tuned:
    config: RunConfig  # the chosen setting, for every reported seed
    grid: pd.DataFrame  # one row per point: its axis values, val_acc, val_loss, run_id, chosen
    axes: list[str]  # the axes tuned (empty: nothing to tune)
    seed: int | None = None  # the seed every grid point ran with (None: nothing was tuned)


@dataclass
class MethodRuns:
    tuned: Tuned
    results: list[RunResult]  # one per seed, the first seed first


def grid_points(profile: Profile, method: str, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The points of ``method``'s grid, in the profile's order; axes fixed by an override are left out."""
    fixed = {k for k, v in (overrides or {}).items() if v is not None}
    axes = {k: v for k, v in profile.grids.get(method, {}).items() if k not in fixed}
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())] if axes else []


def tune(profile: Profile, method: str, overrides: dict[str, Any] | None = None, progress: bool = True) -> Tuned:
    """Train each grid point with the tuning seed on train, score it on validation, choose one."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    points = grid_points(profile, method, overrides)
    base = profile.run_config(method, **overrides, seed=profile.seeds[0])
    if not points:  # nothing to tune: no grid behind this row (its earlier grid's runs stay on disk)
        (records.method_folder(base.out, base.profile, method) / TUNING).unlink(missing_ok=True)
        return Tuned(base, pd.DataFrame(), [])
    rows = []
    for i, point in enumerate(points):
        if progress:
            print(f"{method}: grid point {i + 1}/{len(points)} {_label(point)} (validation only)", flush=True)
        cfg = dataclasses.replace(
            profile.run_config(method, **overrides, **point, seed=profile.grid_seed),
            evaluate_test=False,
            test_curves=False,
        )
        res = run(cfg, resume=True, reuse=True, progress=progress)
        val = res.metrics.get("val") or {}
        rows.append(
            {
                **point,
                "val_acc": val.get("accuracy", float("nan")),
                "val_loss": res.metrics.get("val_loss", float("nan")),
                "run_id": res.run_dir.name,
            }
        )
    grid = pd.DataFrame(rows)
    best = choose(grid)
    grid["chosen"] = [i == best for i in range(len(grid))]
    atomic.write_bytes(
        records.method_folder(base.out, base.profile, method) / TUNING, grid.to_csv(index=False).encode()
    )
    chosen = profile.run_config(method, **overrides, **points[best], seed=profile.seeds[0])
    return Tuned(chosen, grid, list(points[0]), profile.grid_seed)


def choose(grid: pd.DataFrame) -> int:
    """The grid's best row by :mod:`vptlib.selection` (ties: the first row, the smaller setting
    as the grid lists them). A point without a validation score (NaN) is never chosen over one with a score.
    """
    return best_index(grid[["val_acc", "val_loss"]].to_dict("records"))


def run_method(
    profile: Profile, method: str, overrides: dict[str, Any] | None = None, progress: bool = True
) -> MethodRuns:
    """Tune ``method`` on validation (when the profile gives it a grid), then run every seed."""
    tuned = tune(profile, method, overrides, progress)
    results = run_seeds(tuned.config, profile.seeds, resume=True, reuse=True, progress=progress)
    return MethodRuns(tuned, results)


def _label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())
