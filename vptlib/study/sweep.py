"""Grids of independent runs: ``vptlib sweep`` / ``make sweep``, and the book's curve pages.

A sweep is a named grid in a profile (``sweeps:``), e.g. methods x seeds x prompt
lengths or training images per class. Each point is one ordinary ``vptlib run`` with
its own run record, so a sweep needs no code path of its own for training: jobs go to
a pool of worker processes, one per visible GPU (each pinned with
``CUDA_VISIBLE_DEVICES``) or, without a GPU, CPU workers sharing the cores. A point
already finished by the same code is reused, and an interrupted one resumes, so a
killed sweep continues where it stopped. The index of the sweep is written to
``runs/<profile>/sweeps/<name>.csv`` atomically; a failed point is listed there with
its error rather than dropped.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pandas as pd
from tqdm import tqdm

from vptlib import atomic
from vptlib.errors import UserError
from vptlib.methods import option_names
from vptlib.runs import records
from vptlib.runs.engine import RunConfig, run, validate

from . import launch, tuning
from .profile import Profile, as_profile

# Axes a sweep may span, beyond methods and seeds: RunConfig fields or method options. An
# option axis applies to the methods that have that option (prompt_tokens: the VPTs).
FIELD_AXES = ("train_per_class", "lr", "epochs")


# Every sweep point trains as many optimiser steps as its method's main-table run: an
# epoch is one pass over the whole training split (RunConfig.epoch_steps), so a point with
# K images per class is not starved of steps at small K.
EPOCH_STEPS = "full-split"


def grid(
    profile: Profile | dict[str, Any],
    name: str,
    check: bool = True,
    settings: dict[str, RunConfig] | None = None,
) -> list[tuple[dict[str, Any], RunConfig]]:
    """The points of sweep ``name`` in ``profile``: (axis values, RunConfig) pairs.

    A point is its method's main-table configuration, ``settings[method]`` (the setting
    its tuning grid chose: :func:`tuned_settings`), with the sweep's axis values set and
    :data:`EPOCH_STEPS` as its step budget. Without ``settings`` the profile's starting
    ``hparams`` stand in, which is right only for counting points (a cost estimate);
    :func:`run_sweep` always passes the tuned ones. Runs go under
    ``<runs>/<profile>-<name>/`` so they never mix with the main table's. A method whose
    runs do not depend on the seed (:meth:`RunConfig.varies_with_seed`: zero-shot and the L-BFGS
    probe on the whole split; never on a K-shot subset, which the seed draws) runs once per
    point, for the first seed only.
    """
    profile = as_profile(profile)
    if name not in profile.sweeps:
        raise UserError(
            f"profile {profile.profile} has no sweep {name!r}; it has: {', '.join(profile.sweeps) or 'none'}"
        )
    sweep = dict(profile.sweeps[name])
    methods, seeds = sweep.pop("methods"), sweep.pop("seeds", [profile.seed])
    if "hparams" in sweep:
        raise UserError(
            f"sweep {name}: a sweep point runs its method's tuned main-table setting, so a sweep has no "
            f"hparams of its own; set budgets in the profile's hparams and grids"
        )
    options = {o for m in methods for o in option_names(m)}
    unknown = sorted(set(sweep) - set(FIELD_AXES) - options)
    if unknown:
        raise UserError(
            f"sweep {name}: unknown axis {', '.join(unknown)}; axes: {', '.join([*FIELD_AXES, *sorted(options)])}"
        )
    points = []
    for method in methods:
        base = (settings or {}).get(method) or profile.run_config(method)
        axes = {k: list(v) for k, v in sweep.items() if k in FIELD_AXES or k in option_names(method)}
        for values in itertools.product(*axes.values()):
            point = dict(zip(axes, values, strict=True))
            fields = {k: v for k, v in point.items() if k in FIELD_AXES}
            opts = {**base.options, **{k: v for k, v in point.items() if k not in FIELD_AXES}}
            seeded = dataclasses.replace(base, **fields, options=opts).varies_with_seed()
            for seed in seeds if seeded else seeds[:1]:
                cfg = dataclasses.replace(
                    base,
                    **fields,
                    options=opts,
                    seed=seed,
                    epoch_steps=EPOCH_STEPS,
                    evaluate_test=True,
                    profile=f"{profile.profile}-{name}",
                )
                points.append(({"method": method, "seed": seed, **point}, cfg.resolved()))
    for _, cfg in points if check else ():
        validate(cfg)
    return points


def tuned_settings(profile: Profile, methods: list[str], progress: bool = True) -> dict[str, RunConfig]:
    """Each method's main-table configuration: the point its tuning grid chose on validation
    (:func:`vptlib.study.tuning.tune`; finished grid points are reused, so after the
    experiment pages this trains nothing), or its profile settings when it has no grid."""
    out = {}
    for method in dict.fromkeys(methods):
        if tuning.grid_points(profile, method):
            out[method] = tuning.tune(profile, method, progress=progress).config
        else:
            out[method] = profile.run_config(method)
    return out


SETTINGS = ("lr", "weight_decay", "optimizer", "epochs", "warmup")  # the index's columns per point


def _settings(cfg: RunConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in SETTINGS}


def _worker_init(devices, threads: int) -> None:
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    import torch

    torch.set_num_threads(threads)


def _job(cfg: RunConfig) -> dict[str, Any]:
    try:
        res = run(cfg, resume=True, reuse=True, progress=False)
    except Exception as exc:  # any failure of one point is recorded in the index; the others go on
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return {"run_dir": "", "error": f"{type(exc).__name__}: {first}"}
    m = res.metrics
    return {
        "run_dir": str(res.run_dir),
        "error": "",
        "test_acc": m["test"]["accuracy"] if m["test"] else None,
        "val_acc": m["val"]["accuracy"] if m["val"] else None,
        "trainable_params": m["trainable_params"],
        "train_images": m["train_images"],
        "seconds_per_epoch": m["seconds_per_epoch"],
        "steps": int(res.history["steps"].iloc[-1]) if "steps" in res.history and len(res.history) else 0,
    }


def workers_for_machine() -> tuple[int, list[int] | None, int]:
    """(workers, GPU ids or None, torch threads per worker)."""
    import torch

    if torch.cuda.is_available():
        gpus = list(range(torch.cuda.device_count()))
        return len(gpus), gpus, max(1, (os.cpu_count() or 1) // len(gpus))
    cores = os.cpu_count() or 1
    workers = max(1, min(4, cores // 2)) if cores > 2 else cores
    return workers, None, max(1, cores // workers)


def run_sweep(
    profile: Profile | dict[str, Any],
    name: str,
    workers: int | None = None,
    progress: bool = True,
    launcher: str = "pool",
    cluster: str = "local",
    params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run (or reuse) every point of sweep ``name``; returns and writes its index.

    ``launcher``: ``pool``, this module's worker processes, or ``submitit`` on ``cluster``
    (:mod:`.launch`: local subprocesses or SLURM jobs, with submitit ``params``). Both run
    the same job per point, so the runs, their reuse and the index are the same.
    """
    profile = as_profile(profile)
    if launcher not in launch.LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: choose one of {', '.join(launch.LAUNCHERS)}")
    grid(profile, name)  # a bad axis or value fails before any tuning run
    if launcher == "submitit":
        launch.executor(_submitit_folder(profile, name), cluster, params or {})  # refused before tuning
    settings = tuned_settings(profile, profile.sweeps[name]["methods"], progress)
    points = grid(profile, name, settings=settings)
    n, gpus, threads = workers_for_machine()
    if launcher == "submitit" and cluster == "slurm":  # the cluster's machines, not this one's
        n, gpus, threads = workers or len(points), None, None
    n = min(workers or n, len(points)) or 1
    rows: list[dict[str, Any]] = [{**axes, **_settings(cfg)} for axes, cfg in points]
    via = f"submitit {cluster}, " if launcher == "submitit" else ""
    bar = tqdm(total=len(points), desc=f"sweep {name} ({via}{n} worker{'s' if n > 1 else ''})", disable=not progress)
    cfgs = [cfg for _, cfg in points]
    try:
        if launcher == "submitit":
            folder = _submitit_folder(profile, name)
            launch.submit_points(rows, cfgs, folder, cluster, n, gpus, threads, params or {}, bar, _job)
        elif n == 1 and not gpus:
            for row, (_, cfg) in zip(rows, points, strict=True):
                row.update(_job(cfg))
                bar.update()
        else:
            _pooled(rows, cfgs, n, gpus, threads, bar)
    finally:  # also on Ctrl-C: the index holds every point finished so far
        bar.close()
        _write_index(profile, name, rows)
    df = pd.DataFrame(rows)
    out = _index_path(profile, name)
    failed = df[df.error != ""]
    if len(failed):
        print(f"{len(failed)} of {len(df)} points failed; see {out}:")
        for _, r in failed.iterrows():
            print(f"  {r.method} seed {r.seed}: {r.error}")
    return df


DIED = (
    "a worker process died while this point ran (killed, e.g. by the out-of-memory killer); "
    "the other points went on: rerun the sweep to retry it, with fewer WORKERS if memory ran out"
)


def _pooled(rows: list[dict], cfgs: list, n: int, gpus, threads: int, bar, job=_job) -> None:
    """Run ``cfgs`` on ``n`` worker processes, filling ``rows``. A worker that dies (a kill
    breaks the whole pool) costs only its own point: the unfinished points are rerun one
    pool at a time with one worker, so the point that kills it again is known and marked."""
    todo = _pool_round(rows, cfgs, list(range(len(cfgs))), n, gpus, threads, bar, job)
    while todo:  # one worker each: the first point it did not finish is the one that killed it
        left = _pool_round(rows, cfgs, todo, 1, gpus, threads, bar, job)
        if left:
            rows[left[0]].update(run_dir="", error=DIED)
            bar.update()
        todo = left[1:]


def _pool_round(rows, cfgs, indices: list[int], n: int, gpus, threads: int, bar, job) -> list[int]:
    """Run the points ``indices``; returns those a dead worker left unfinished, in order."""
    ctx = mp.get_context("spawn")  # CUDA and fork do not mix
    queue = None
    if gpus:
        queue = ctx.Manager().Queue()
        for g in gpus[:n]:
            queue.put(g)
    broken = []
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_worker_init, initargs=(queue, threads)) as pool:
        futures = {pool.submit(job, cfgs[i]): i for i in indices}
        for fut in as_completed(futures):
            try:
                rows[futures[fut]].update(fut.result())
            except BrokenProcessPool:
                broken.append(futures[fut])
                continue
            bar.update()
    return sorted(broken)


def _index_path(profile: Profile, name: str):
    return records.profile_folder(profile.runs, profile.profile) / "sweeps" / f"{name}.csv"


def _submitit_folder(profile: Profile, name: str):
    return _index_path(profile, name).with_name(f"{name}-submitit")


def _write_index(profile: Profile, name: str, rows: list[dict]) -> None:
    """Every point in the index, a point never finished marked as such, never dropped."""
    full = [r if "error" in r else {**r, "run_dir": "", "error": "not run: the sweep was interrupted"} for r in rows]
    atomic.write_bytes(_index_path(profile, name), pd.DataFrame(full).to_csv(index=False).encode())
