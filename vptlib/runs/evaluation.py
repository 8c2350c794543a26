"""Evaluation: a model's fp32 logits over a tensor in batches, a staged run's loss and class
probabilities on one split, and accuracy.

The training loop, the record writer and a reloaded run's predictor all compute logits
through :func:`logits_in_batches`, so ``vptlib predict`` reproduces a run's probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from .devices import autocast

if TYPE_CHECKING:
    from .config import RunConfig
    from .staging import StagedRun


def logits_in_batches(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> Iterator[torch.Tensor]:
    """fp32 logits of ``forward`` over ``x`` in consecutive batches, under the run's autocast.

    The engine's evaluation and the predictor both call this, so they compute alike.
    """
    for i in range(0, len(x), batch_size):
        with torch.no_grad(), autocast(device, precision):
            yield forward(x[i : i + batch_size]).float()


@torch.no_grad()
def evaluate(inputs: StagedRun, split: str, cfg: RunConfig) -> tuple[float, np.ndarray]:
    """(mean loss, class probabilities) on one split, in eval mode, no augmentation.

    The batches go through :func:`logits_in_batches`, as a reloaded
    run's predictor does, so ``vptlib predict`` reproduces these probabilities.
    """
    x, y = inputs.splits[split]
    if len(y) == 0:
        return float("nan"), np.zeros((0, len(inputs.data.classes)))
    started = time.perf_counter()
    inputs.model.eval()
    losses, probs = [], []
    batches = logits_in_batches(
        lambda b: inputs.logits(b, train=False), x, cfg.batch_size, inputs.device, cfg.precision
    )
    for i, logits in zip(range(0, len(y), cfg.batch_size), batches, strict=True):
        losses.append(inputs.model.loss(logits, y[i : i + cfg.batch_size]).item() * len(logits))
        probs.append(torch.softmax(logits, -1).cpu())
    inputs.eval_seconds += time.perf_counter() - started
    return sum(losses) / len(y), torch.cat(probs).numpy()


def accuracy(probs: np.ndarray, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels.cpu().numpy()).mean()) if len(probs) else float("nan")


class Scorer:
    """``score(split) -> (accuracy, loss)`` of the model as it stands, for the choices a
    method makes after training (:meth:`~vptlib.methods.base.Classifier.finalize`).

    ``splits`` names what it may score: the test split only when the run may look at it, and
    the validation split only when the run selects on it (``select="val"``). Asking for
    another split is an error, never a silent look.
    """

    def __init__(self, inputs: StagedRun, cfg: RunConfig):
        self.inputs, self.cfg = inputs, cfg
        self.splits = tuple(s for s in inputs.splits if s != "val" or cfg.select == "val")
        self.test_looks: list[tuple[float, str]] = []  # every test score it gave, for the ledger

    def __call__(self, split: str) -> tuple[float, float]:
        if split not in self.splits:
            why = "a tuning grid's point" if split == "test" else "it chooses nothing on validation: select last"
            raise PermissionError(f"this run may not look at the {split} split ({why})")
        loss, probs = evaluate(self.inputs, split, self.cfg)
        acc = accuracy(probs, self.inputs.splits[split][1])
        if split == "test":
            self.test_looks.append((acc, f"after training, look {len(self.test_looks) + 1} (plot only)"))
        return acc, loss
