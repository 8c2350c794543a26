"""Small helpers the test modules share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vptlib.runs.config import RunConfig


def tiny_config(data: Path | str, model: Path | str, out: Path | str, **kw: Any) -> RunConfig:
    """A short CPU fp32 run on the tiny model: VPT-shallow for 2 epochs unless ``kw`` says otherwise."""
    base: dict[str, Any] = {
        "method": "vpt_shallow",
        "data": str(data),
        "model": str(model),
        "epochs": 2,
        "batch_size": 16,
        "device": "cpu",
        "precision": "fp32",
        "out": str(out),
    }
    return RunConfig(**{**base, **kw})


def sweep_profile(prepared: Path, model: Path, runs: Path, sweeps: dict[str, Any]) -> dict[str, Any]:
    """A profile ``s`` for sweep tests: CPU fp32 on ``model``, short budgets, the given ``sweeps``."""
    return {
        "profile": "s",
        "data": str(prepared),
        "model": str(model),
        "runs": str(runs),
        "seed": 0,
        "device": "cpu",
        "precision": "fp32",
        "batch_size": 16,
        "hparams": {"linear": {"epochs": 2}, "vpt_shallow": {"epochs": 1}, "zero_shot": {"epochs": 0}},
        "sweeps": sweeps,
    }


def job_that_dies_on(cfg: Any) -> dict[str, Any]:
    """A sweep job for the worker-death test: SIGKILLs its own process on ``"die"`` (as the
    out-of-memory killer would), else returns a result row. Importable by spawned workers."""
    import os
    import signal

    if cfg == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"run_dir": f"run-{cfg}", "error": "", "test_acc": 0.5}


def diverging_at(real: Any, epoch: int, calls: dict[str, int]) -> Any:
    """``real`` (the training loop's ``_train_epoch``), raising TrainingDiverged on call ``epoch``;
    ``calls["n"]`` counts the epochs trained."""
    from vptlib.errors import TrainingDiverged

    def train_epoch(*a: Any, **k: Any) -> Any:
        calls["n"] = calls.get("n", 0) + 1
        if calls["n"] == epoch:
            raise TrainingDiverged(f"the loss became nan at epoch {epoch}, step 1")
        return real(*a, **k)

    return train_epoch
