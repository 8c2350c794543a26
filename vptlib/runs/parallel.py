"""Data parallelism for one run: this process's place among the processes that
``accelerate launch`` (or any launcher setting ``WORLD_SIZE > 1``) started.

Without a launcher every method is the identity, so the training loop is written once.
"""

from __future__ import annotations

from typing import Any

import torch

from vptlib.switches import world


def is_main_process() -> bool:
    """True unless a launcher started this process as a data-parallel worker other than the first."""
    return world()[0] == 0


class Dist:
    """This process's place in a data-parallel run; one process when not launched in parallel."""

    def __init__(self):
        self.acc = None
        if world()[1] > 1:
            from accelerate import Accelerator  # the process group is Accelerate's, not ours

            self.acc = Accelerator()
        self.rank = self.acc.process_index if self.acc else 0
        self.world = self.acc.num_processes if self.acc else 1
        self.main = self.rank == 0

    def barrier(self) -> None:
        if self.acc:
            self.acc.wait_for_everyone()

    def broadcast(self, obj: Any) -> Any:
        """The main process's value of ``obj``, on every process."""
        if not self.acc:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj if self.main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def wrap(self, module: torch.nn.Module, find_unused: bool) -> torch.nn.Module:
        """DDP through Accelerate, so gradients are averaged over processes in backward."""
        if not self.acc:
            return module
        from accelerate.utils import DistributedDataParallelKwargs

        self.acc.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=find_unused)
        return self.acc.prepare_model(module, device_placement=False)

    def total(self, *values: float) -> list[float]:
        """Sums over processes (training loss and accuracy for the history)."""
        if not self.acc:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        return self.acc.reduce(t, reduction="sum").tolist()
