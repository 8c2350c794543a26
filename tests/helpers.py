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


# ---------------------------------------------------------------- real images (../shared/data)
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kaggle-brain-mri-224"


def require_real() -> Path:
    """The shared real images; a one-line skip where they are absent, a failure under CI."""
    import os

    import pytest

    if not (REAL / "Training").is_dir():
        msg = f"real images missing: {REAL} (the shared data beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI must run these tests")
        pytest.skip(msg)
    return REAL


def thumbs(paths: list[Path]):
    """The independent copy measure's vectors, written apart from vptlib's rule: 64x64 grey
    thumbnails (PIL's bicubic), mean-centred, unit norm; as they are and mirrored."""
    import numpy as np
    from PIL import Image

    x = []
    for p in paths:
        with Image.open(p) as img:
            x.append(np.asarray(img.convert("L").resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float64))
    x = np.stack(x)

    def unit(a):
        a = a.reshape(len(a), -1)
        a = a - a.mean(1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return unit(x), unit(x[:, :, ::-1])


def real_subset(out: Path, per_class: int = 60, seed: int = 0) -> Path:
    """A Kaggle-layout source of real images with their leakage: ``per_class`` Testing images a
    class, every Training image whose independent match with one of them is 0.9 or more, and
    ``per_class`` more Training images a class."""
    import shutil

    import numpy as np

    real = require_real()
    rng = np.random.default_rng(seed)
    train_all = sorted((real / "Training").rglob("*.jpg"))
    t, tm = thumbs(train_all)
    for cls in ("glioma", "meningioma", "notumor", "pituitary"):
        tests = sorted((real / "Testing" / cls).glob("*.jpg"))
        tests = [tests[i] for i in sorted(rng.choice(len(tests), per_class, replace=False))]
        q, _ = thumbs(tests)
        linked = np.nonzero(np.maximum(q @ t.T, q @ tm.T).max(0) >= 0.9)[0]
        own = [i for i, p in enumerate(train_all) if p.parent.name == cls]
        extra = rng.choice(own, per_class, replace=False)
        for f in tests:
            (out / "Testing" / cls).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out / "Testing" / cls / f.name)
        for i in sorted(set(linked.tolist()) | set(extra.tolist())):
            f = train_all[i]
            (out / "Training" / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out / "Training" / f.parent.name / f.name)
    return out


def namespaces_work() -> bool:
    """Unprivileged user + mount + PID namespaces (``unshare``), where the kernel allows them."""
    import subprocess

    try:
        return subprocess.run(["unshare", "-Urmpf", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def on_a_full_disk(mount: Path, argv: list[str], env: dict[str, str] | None = None, size: str = "64k"):
    """Run ``argv`` with a tmpfs of ``size`` mounted on ``mount`` (a real full disk: ENOSPC from
    the kernel, whichever library writes), in a user and mount namespace: no root needed."""
    import subprocess

    mount.mkdir(parents=True, exist_ok=True)
    script = 'mount -t tmpfs -o size="$1" none "$0" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script, str(mount), size, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
