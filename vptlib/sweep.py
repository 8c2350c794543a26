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

import itertools
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from . import atomic
from .engine import RunConfig, run, run_config, validate
from .errors import UserError

# Axes a sweep may span, beyond methods and seeds: RunConfig fields or method options.
AXES = ("train_per_class", "prompt_tokens", "lr", "epochs")


def grid(profile: dict[str, Any], name: str) -> list[tuple[dict[str, Any], RunConfig]]:
    """The points of sweep ``name`` in ``profile``: (axis values, RunConfig) pairs.

    Runs go under ``<runs>/<profile>-<name>/`` so they never mix with the main table's.
    Zero-shot trains nothing, so it runs once per point, for the first seed only.
    """
    sweeps = profile.get("sweeps") or {}
    if name not in sweeps:
        raise UserError(
            f"profile {profile.get('profile')} has no sweep {name!r}; it has: {', '.join(sweeps) or 'none'}"
        )
    spec = dict(sweeps[name])
    methods, seeds = spec.pop("methods"), spec.pop("seeds", [profile.get("seed", 0)])
    overrides = spec.pop("hparams", {})  # per-method budgets for this sweep
    unknown = sorted(set(spec) - set(AXES))
    if unknown:
        raise UserError(f"sweep {name}: unknown axis {', '.join(unknown)}; axes: {', '.join(AXES)}")
    axes = {k: list(v) for k, v in spec.items()}
    points = []
    for method in methods:
        method_axes = {k: v for k, v in axes.items() if k != "prompt_tokens" or method.startswith("vpt")}
        for values in itertools.product(*method_axes.values()):
            point = dict(zip(method_axes, values, strict=True))
            for seed in seeds[:1] if method == "zero_shot" else seeds:
                hp = {**profile.get("hparams", {}).get(method, {}), **overrides.get(method, {})}
                cfg = run_config(method, {method: hp}, data=profile["data"], model=profile["model"],
                                 profile=f"{profile['profile']}-{name}", out=profile.get("runs", "runs"),
                                 device=profile.get("device", "auto"), precision=profile.get("precision", "auto"),
                                 batch_size=profile.get("batch_size", 32), seed=seed, **point)  # fmt: skip
                points.append(({"method": method, "seed": seed, **point}, cfg.resolved()))
    for _, cfg in points:
        validate(cfg)
    return points


def _worker_init(devices, threads: int) -> None:
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    import torch

    torch.set_num_threads(threads)


def _job(cfg: RunConfig) -> dict[str, Any]:
    try:
        res = run(cfg, resume=True, reuse=True, progress=False)
    except (UserError, RuntimeError) as exc:  # recorded in the index, never silently dropped
        return {"run_dir": "", "error": f"{type(exc).__name__}: {exc}"}
    m = res.metrics
    return {"run_dir": str(res.run_dir), "error": "", "test_acc": m["test"]["accuracy"] if m["test"] else None,
            "val_acc": m["val"]["accuracy"] if m["val"] else None, "trainable_params": m["trainable_params"],
            "train_images": m["train_images"], "seconds_per_epoch": m["seconds_per_epoch"]}  # fmt: skip


def workers_for_machine() -> tuple[int, list[int] | None, int]:
    """(workers, GPU ids or None, torch threads per worker)."""
    import torch

    if torch.cuda.is_available():
        gpus = list(range(torch.cuda.device_count()))
        return len(gpus), gpus, max(1, (os.cpu_count() or 1) // len(gpus))
    cores = os.cpu_count() or 1
    workers = max(1, min(4, cores // 2)) if cores > 2 else cores
    return workers, None, max(1, cores // workers)


def run_sweep(profile: dict[str, Any], name: str, workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Run (or reuse) every point of sweep ``name``; returns and writes its index."""
    points = grid(profile, name)
    n, gpus, threads = workers_for_machine()
    n = min(workers or n, len(points)) or 1
    rows: list[dict[str, Any]] = [dict(axes) for axes, _ in points]
    bar = tqdm(total=len(points), desc=f"sweep {name} ({n} worker{'s' if n > 1 else ''})", disable=not progress)
    if n == 1 and not gpus:
        for row, (_, cfg) in zip(rows, points, strict=True):
            row.update(_job(cfg))
            bar.update()
    else:
        ctx = mp.get_context("spawn")  # CUDA and fork do not mix
        queue = None
        if gpus:
            queue = ctx.Manager().Queue()
            for g in gpus[:n]:
                queue.put(g)
        with ProcessPoolExecutor(n, mp_context=ctx, initializer=_worker_init, initargs=(queue, threads)) as pool:
            futures = {pool.submit(_job, cfg): i for i, (_, cfg) in enumerate(points)}
            for fut in as_completed(futures):
                rows[futures[fut]].update(fut.result())
                bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    out = Path(profile.get("runs", "runs")) / profile["profile"] / "sweeps" / f"{name}.csv"
    atomic.write_bytes(out, df.to_csv(index=False).encode())
    failed = df[df.error != ""]
    if len(failed):
        print(f"{len(failed)} of {len(df)} points failed; see {out}:")
        for _, r in failed.iterrows():
            print(f"  {r.method} seed {r.seed}: {r.error}")
    return df


def load_sweep(runs: str | Path, profile: str, name: str) -> pd.DataFrame:
    path = Path(runs) / profile / "sweeps" / f"{name}.csv"
    if not path.is_file():
        raise UserError(f"no sweep {name} under {Path(runs) / profile}: run `make sweep SWEEP={name}` first")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])
