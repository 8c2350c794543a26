"""What every method returns: a :class:`Classifier`, i.e. pixels in, class logits out.

Its parameters with ``requires_grad`` are exactly the ones its method trains; the
engine optimises those and saves only those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrainDefaults:
    """A method's recommended optimisation settings; ``vptlib run`` flags override them."""

    epochs: int
    lr: float
    optimizer: str = "adamw"
    weight_decay: float = 0.0


class Classifier(nn.Module):
    """Base class: ``forward(pixel_values) -> (B, num_classes)`` logits."""

    method: str = ""
    uses_feature_cache: bool = False  # True: the engine trains ``head`` on cached frozen features
    # True: ``loss`` is the whole batch's loss on every data-parallel process (in-batch
    # contrastive losses gather the batch); False: the mean over this process's share.
    batch_loss_is_global: bool = False
    unused_params_possible: bool = False  # some trainable tensors may get no gradient in a step (DDP must know)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups; methods with per-part learning rates override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def on_epoch_start(self, epoch: int) -> None:
        """Hook for schedules that change what trains (LP-FT)."""

    def on_step_end(self) -> None:
        """Hook after each optimizer step (FLYP clips its temperature here)."""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every tensor this method trains, by name: what a checkpoint holds."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def finalize(self, score: Callable[[str], tuple[float, float]]) -> dict:
        """Hook after the epoch is selected, for choices made on validation (WiSE-FT's alpha).

        ``score(split)`` returns (accuracy, loss) of the model as it stands on that split.
        Returns what to record in the run's metrics.
        """
        return {}

    def describe(self) -> str:
        """One line for reports: what this method trains."""
        return ""


def vpt_head(in_features: int, num_classes: int) -> nn.Linear:
    """The linear head with VPT's official init (KMnP/vpt ``src/models/mlp.py``).

    Kaiming-normal weights in ``fan_out`` mode; the bias keeps PyTorch's default.
    """
    head = nn.Linear(in_features, num_classes)
    nn.init.kaiming_normal_(head.weight, a=0, mode="fan_out")
    return head


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
