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
