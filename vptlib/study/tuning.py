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

Grids are written on their method's own scale: a ``base_lr`` axis is VPT's convention,
``lr = base_lr * batch_size / 256`` (KMnP/vpt's ``tune_vtab.py``), so the profile lists
the paper's values. A tie of validation accuracy is broken as the method's paper does
(``TrainDefaults.grid_ties``: VPT keeps the smallest lr). A chosen value on the edge of
its axis (its smallest or largest, other than a weight decay of 0) means the optimum may
lie outside the grid: :func:`tune` says so in the build log and ``Tuned.edges`` carries
it to the experiment page.

Grid points are ordinary runs: a finished one is reused by the same code, an interrupted
one resumes. An override given by the user (``make run ARGS="-p lr 0.5"``) fixes that
axis, and the grid spans the others.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vptlib import atomic, switches
from vptlib.errors import TrainingDiverged, UserError
from vptlib.methods import spec
from vptlib.runs import records
from vptlib.runs.config import RunConfig
from vptlib.runs.engine import run, run_seeds
from vptlib.runs.records import RunResult
from vptlib.selection import best_index

from .profile import Profile

TUNING = "tuning.csv"  # runs/<profile>/<method>/tuning.csv: the grid of the method's current row
TUNING_OUTSIDE = "tuning-outside-book.csv"  # the grid of a notebook run outside the book's build (in_book)
BASE_LR_BATCH = 256  # a base_lr axis: lr = base_lr * batch_size / BASE_LR_BATCH (KMnP/vpt)


@dataclass
class Tuned:
    config: RunConfig  # the chosen setting, for every reported seed
    grid: pd.DataFrame  # one row per point: its axis values, val_acc, val_loss, run_id, chosen
    axes: list[str]  # the axes tuned (empty: nothing to tune)
    seed: int | None = None  # the seed every grid point ran with (None: nothing was tuned)
    edges: list[str] = dataclasses.field(default_factory=list)  # chosen values on an edge of their axis


@dataclass
class MethodRuns:
    tuned: Tuned
    results: list[RunResult]  # one per seed, the first seed first


def grid_points(profile: Profile, method: str, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The points of ``method``'s grid, in the profile's order; axes fixed by an override are left out."""
    fixed = {k for k, v in (overrides or {}).items() if v is not None}
    if "lr" in fixed:
        fixed.add("base_lr")  # an lr given by the user fixes the lr whatever the grid's scale
    axes = {k: v for k, v in profile.grids.get(method, {}).items() if k not in fixed}
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())] if axes else []


def tune(profile: Profile, method: str, overrides: dict[str, Any] | None = None, progress: bool = True) -> Tuned:
    """Train each grid point with the tuning seed on train, score it on validation, choose one."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    points = grid_points(profile, method, overrides)
    base = profile.run_config(method, **overrides, seed=profile.seeds[0])
    # The book's grid file only from the book's build: another's would change its "grid points".
    grid_file = records.method_folder(base.out, base.profile, method) / (TUNING if in_book() else TUNING_OUTSIDE)
    if not points:  # nothing to tune: no grid behind this row (its earlier grid's runs stay on disk)
        grid_file.unlink(missing_ok=True)
        return Tuned(base, pd.DataFrame(), [])
    rows = []
    for i, point in enumerate(points):
        if progress:
            print(f"{method}: grid point {i + 1}/{len(points)} {_label(point)} (validation only)", flush=True)
        cfg = dataclasses.replace(
            profile.run_config(method, **overrides, **fields(point, base.batch_size), seed=profile.grid_seed),
            evaluate_test=False,
            test_curves=False,
        )
        row = {**point, "lr": cfg.resolved().lr, "error": ""}
        try:
            res = run(cfg, resume=True, reuse=True, progress=progress)
        except TrainingDiverged as exc:  # a grid's large lrs may diverge: that point loses, the grid goes on
            print(f"note: {method}: grid point {_label(point)} diverged and is not chosen: {exc}", flush=True)
            rows.append({**row, "val_acc": float("nan"), "val_loss": float("nan"), "run_id": "", "error": str(exc)})
            continue
        val = res.metrics.get("val") or {}
        rows.append(
            {
                **row,
                "val_acc": val.get("accuracy", float("nan")),
                "val_loss": res.metrics.get("val_loss", float("nan")),
                "run_id": res.run_dir.name,
            }
        )
    grid = pd.DataFrame(rows)
    if (grid.error != "").all():
        raise UserError(f"{method}: every point of its tuning grid diverged; lower the grid's learning rates")
    best = choose(grid, spec(method).defaults.grid_ties)
    grid["chosen"] = [i == best for i in range(len(grid))]
    atomic.write_bytes(grid_file, grid.to_csv(index=False).encode())
    chosen = profile.run_config(method, **overrides, **fields(points[best], base.batch_size), seed=profile.seeds[0])
    edges = edge_notes(profile.grids[method], points[best])
    for note in edges:
        print(f"note: {method}: {note}", flush=True)
    return Tuned(chosen, grid, list(points[0]), profile.grid_seed, edges)


def fields(point: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """A grid point as run settings: a ``base_lr`` becomes the lr it stands for at the point's
    batch size (its own when batch size is an axis too, else ``batch_size``)."""
    out = dict(point)
    if "base_lr" in out:
        out["lr"] = out.pop("base_lr") * out.get("batch_size", batch_size) / BASE_LR_BATCH
    return out


# TrainDefaults.grid_ties, as the experiment page states it.
TIE_RULES = {
    "loss": "a tie of validation accuracy goes to the lower validation loss, then to the earlier point (the study's rule)",
    "smallest_lr": (
        "a tie of validation accuracy goes to the smallest learning rate, then to the lower validation loss "
        "(as KMnP/vpt's tune_vtab.py breaks it, for stability)"
    ),
}


def choose(grid: pd.DataFrame, ties: str = "loss") -> int:
    """The grid's best row by :mod:`vptlib.selection`. ``ties`` is the method's paper's rule for
    a tie of validation accuracy: "loss" (lower validation loss, then the first row) or
    "smallest_lr" (the smallest learning rate, then lower loss). A point without a validation
    score (NaN) is never chosen over one with a score.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"unknown tie rule {ties!r}; rules: {', '.join(TIE_RULES)}")
    rows = grid.to_dict("records")
    if ties == "smallest_lr":
        return best_index(rows, tiebreak=lambda r: r["lr"], tiebreak_first=True)
    return best_index(rows)


def edge_notes(axes: dict[str, list[Any]], chosen: dict[str, Any]) -> list[str]:
    """One sentence per numeric axis whose chosen value is its smallest or largest (a weight
    decay of 0 is the end of its range, not an edge of the grid)."""
    notes = []
    for axis, values in axes.items():
        if axis not in chosen or len(values) < 2 or not all(isinstance(v, int | float) for v in values):
            continue
        value = chosen[axis]
        if value == 0 and axis == "weight_decay":
            continue
        side = "largest" if value == max(values) else "smallest" if value == min(values) else None
        if side:
            notes.append(f"the chosen {axis} {value:g} is the {side} the grid tried: the optimum may lie beyond it")
    return notes


def run_method(
    profile: Profile, method: str, overrides: dict[str, Any] | None = None, progress: bool = True
) -> MethodRuns:
    """Tune ``method`` on validation (when the profile gives it a grid), then run every seed.

    The seeds' runs become the book's row (``group.json``) unless a notebook executes this
    outside the book's build: plain papermill or a notebook opened by hand names them in
    ``group-outside-book.json`` instead, so the book never shows what make did not execute.
    """
    tuned = tune(profile, method, overrides, progress)
    group = records.GROUP if in_book() else records.GROUP_OUTSIDE
    results = run_seeds(tuned.config, profile.seeds, group=group, resume=True, reuse=True, progress=progress)
    if group != records.GROUP:
        where = records.method_folder(profile.runs, profile.profile, method) / group
        print(f"outside the book's build: these runs are named in {where}; the book is unchanged")
    return MethodRuns(tuned, results)


def in_book() -> bool:
    """Whether this process may change what the book shows: a page the book's build executes
    (``VPTLIB_BOOK``, set by ``vptlib book execute``), or code that is not a notebook (a test,
    a script); a notebook kernel the build did not start may not."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    in_kernel = shell is not None and type(shell).__module__.startswith("ipykernel")
    return switches.flag(switches.BOOK) or not in_kernel


def _label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())
