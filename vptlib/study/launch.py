"""Sweep points through submitit, an existing job launcher: local subprocesses or SLURM jobs.

The worker pool of :mod:`vptlib.study.sweep` runs a sweep on one machine. For a user who
outgrows it, ``vptlib sweep --launcher submitit --cluster slurm`` hands the same points
to SLURM through submitit (``--cluster local``: one subprocess per point on this
machine, the tested default; ``debug``: in this process, for a debugger). A job is the
pool's job (``vptlib.study.sweep._job``): one ordinary ``vptlib run`` with resume and
reuse on. So a point's run record, its reuse by ``make book`` (same code, same run) and
its lines in the test ledger are the pool's; submitit adds only the transport. A sweep
whose controller is killed is rerun like any sweep: finished points are reused and
interrupted ones resume from their checkpoints. Each job's pickles and logs stay under
``runs/<profile>/sweeps/<name>-submitit/``, and a job that dies is listed in the index
with the path of its log.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vptlib.errors import UserError

LAUNCHERS = ("pool", "submitit")  # pool: vptlib.study.sweep's worker processes
CLUSTERS = ("local", "slurm", "debug")
# submitit's local default timeout is 2 minutes, which would kill every real training run;
# on SLURM the partition's limit applies unless timeout_min is given.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
POLL_S = 0.5  # how often the controller looks at its local jobs


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["slurm_partition=gpu", "timeout_min=120"]`` -> submitit parameters (ints, floats kept)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--submitit-param {item!r}: write it as NAME=VALUE, e.g. slurm_partition=gpu")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def executor(folder: Path, cluster: str, params: dict[str, Any]):
    """A submitit executor for ``cluster``, its parameters checked before anything is submitted."""
    if cluster not in CLUSTERS:
        raise UserError(f"--cluster {cluster!r}: choose one of {', '.join(CLUSTERS)}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError(
            "--cluster slurm: SLURM's sbatch is not on this machine's PATH; run the sweep from a "
            "SLURM login node, or on this machine with: vptlib sweep ... --launcher submitit --cluster local"
        )
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    defaults = {"timeout_min": LOCAL_TIMEOUT_MIN} if cluster == "local" else {}
    try:
        ex.update_parameters(**{**defaults, **params})
    except (ValueError, TypeError, NameError, AssertionError) as exc:  # submitit names the culprit
        raise UserError(f"submitit refused the parameters {params}: {exc}") from None
    return ex


def _failure(job, cluster: str, exc: BaseException) -> dict[str, Any]:
    first = " ".join(str(exc).strip().splitlines()[:2])[:300]  # submitit: "has not produced any output"
    log = getattr(getattr(job, "paths", None), "stderr", "")
    return {"run_dir": "", "error": f"the {cluster} job {job.job_id} died ({first}); its log: {log}"}


def threaded_job(job: Callable, cfg: Any, threads: int | None, gpu: int | None) -> dict[str, Any]:
    """``job(cfg)`` with ``threads`` torch threads on GPU ``gpu`` alone, in the job's process.
    The GPU is pinned before CUDA starts, which is at the run's first use of it."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return job(cfg)


def submit_points(
    rows: list[dict],
    cfgs: list,
    folder: Path,
    cluster: str,
    workers: int,
    gpus: list[int] | None,
    threads: int | None,
    params: dict[str, Any],
    bar,
    job: Callable,
) -> None:
    """Run ``cfgs`` through submitit, filling ``rows`` in order. On this machine (local,
    debug) at most ``workers`` jobs run at once, each pinned to one of ``gpus`` if any
    (submitit's local executor would give every job the first GPU); on SLURM every point
    is submitted at once as one job array, ``workers`` of them running at a time, each
    with the GPUs and cores its ``params`` ask of SLURM."""
    ex = executor(folder, cluster, params)
    if cluster == "slurm":
        ex.update_parameters(slurm_array_parallelism=workers)
        with ex.batch():
            jobs = [ex.submit(threaded_job, job, cfg, params.get("cpus_per_task"), None) for cfg in cfgs]
        for i, j in enumerate(jobs):
            _collect(rows, i, j, cluster, bar)
        return
    free = list(gpus[:workers]) if gpus else []
    running: dict[int, tuple[Any, int | None]] = {}
    todo = list(range(len(cfgs)))
    try:
        while todo or running:
            while todo and len(running) < workers:
                i = todo.pop(0)
                gpu = free.pop(0) if gpus else None
                running[i] = (ex.submit(threaded_job, job, cfgs[i], threads, gpu), gpu)
            done = [i for i, (j, _) in running.items() if cluster == "debug" or j.done()]
            for i in done:
                j, gpu = running.pop(i)
                _collect(rows, i, j, cluster, bar)
                if gpu is not None:
                    free.append(gpu)
            if not done:
                time.sleep(POLL_S)
    finally:  # Ctrl-C: local jobs die with the controller; their runs resume on the next sweep
        for j, _ in running.values():
            j.cancel(check=False)


def _collect(rows: list[dict], i: int, job, cluster: str, bar) -> None:
    try:
        rows[i].update(job.result())
    except Exception as exc:  # the job's process died (killed, timed out): only this point is lost
        rows[i].update(_failure(job, cluster, exc))
    bar.update()
