"""What a method costs in floating-point operations, counted by PyTorch, not estimated.

``torch.utils.flop_counter.FlopCounterMode`` counts every matrix product, convolution and
attention kernel the model dispatches, as FLOPs (a multiply-add is two), so a ViT-B/32
image forward is about 8.8 GFLOPs (4.4 GMACs). Two numbers per run, each per image:

* ``inference``: pixels to logits, the whole model, in eval mode;
* ``train_step``: one training step's forward and backward as the engine takes it: through
  the frozen encoder on pixels, or only the head on cached features (a feature-cache
  method then also paid its encoder once per image, which ``inference`` shows).

Both are measured on a batch of :data:`BATCH` and divided by it, so a cost shared by the
batch (CoOp's and CLIP-LoRA's class texts through the text tower) is spread as in training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.utils.flop_counter import FlopCounterMode

from vptlib.data.dataset import normalize

from .devices import autocast

if TYPE_CHECKING:
    from .staging import StagedRun

BATCH = 8


def count(fn) -> int:
    """FLOPs that ``fn()`` dispatches."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def per_image(inputs: StagedRun, precision: str) -> dict[str, float]:
    """``{"inference": ..., "train_step": ...}`` FLOPs per image (see the module's docstring)."""
    model, data = inputs.model, inputs.data
    pixels = data.train.pixels[:BATCH].to(inputs.device)
    n = len(pixels)
    if n == 0:
        return {"inference": 0.0, "train_step": 0.0}
    was_training = model.training

    def forward() -> None:
        # Not under no_grad: FlopCounterMode's module tracker fails on a parameter's view made
        # there (VPT's expanded prompts); the graph is built and dropped, no backward is counted.
        with autocast(inputs.device, precision):
            model(normalize(pixels, data.prep))

    x, y = inputs.splits["train"]
    x, y = x[:n], y[:n]

    def step() -> None:
        with autocast(inputs.device, precision):
            logits = model.head(x.float()) if inputs.features else model(normalize(x, data.prep))
        model.loss(logits.float(), y).backward()

    model.eval()
    inference = count(forward)
    model.train()
    train = count(step) if any(p.requires_grad for p in model.parameters()) else 0
    for p in model.parameters():  # the counted step leaves no gradient behind
        p.grad = None
    model.train(was_training)
    return {"inference": inference / n, "train_step": train / n}
