"""One run in progress, as the engine, the training loop and the record writer share it: what
it is (its config), where it is written, on which device and processes, whether it reports
progress, and when it started. Passing this one object keeps every function of the run path
to a few arguments (open_clip's ``TrainState`` does the same for its epoch function)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunConfig
from .parallel import Dist


@dataclass(frozen=True)
class RunContext:
    cfg: RunConfig
    run_dir: Path
    device: torch.device
    dist: Dist
    progress: bool = True
    started: float = 0.0  # time.perf_counter() when the run began (its setup time counts from here)

    def with_config(self, cfg: RunConfig) -> RunContext:
        """The same run with its config changed (a closed-form fit trains no epochs)."""
        return dataclasses.replace(self, cfg=cfg)
