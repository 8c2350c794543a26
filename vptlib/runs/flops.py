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
:func:`recorded` counts once per (backbone, method and options, training-set size, batch,
precision, kernel) and keeps the count under the data folder's ``cache/``, so a run whose
features are cached never runs its backbone again to count them.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from vptlib import atomic
from vptlib.data.dataset import normalize

from .devices import attention_kernel, autocast

if TYPE_CHECKING:
    from .staging import StagedRun

BATCH = 8


def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(grad_out, query, key, value, *args, **kwargs) -> int:  # out_shape among kwargs
    return sdpa_backward_flop_count(grad_out, query, key, value)


# PyTorch counts the CUDA attention kernels but not the CPU's flash kernel, the one SDPA
# dispatches to on a CPU in fp32: without these a CPU run's attention counted zero FLOPs.
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}


def count(fn) -> int:
    """FLOPs that ``fn()`` dispatches, attention on every device's kernel included."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
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


def recorded(inputs: StagedRun, precision: str) -> dict[str, float]:
    """:func:`per_image`, counted once and then read from the data folder's cache.

    Every process counts when it is missing (a method's loss may gather across processes,
    FLYP's does, so one process alone would wait for the others forever); the main one writes it."""
    model, dist = inputs.model, inputs.dist
    what = {
        "backbone": inputs.model_fingerprint,
        "method": f"{type(model).__module__}.{type(model).__qualname__}",
        "options": json.dumps(getattr(model, "options", {}), sort_keys=True, default=str),
        # the training-set size matters only where it sizes the model (Tip-Adapter-F's cache)
        "train_images": len(inputs.data.train) if model.data_sized else None,
        "batch": min(BATCH, len(inputs.data.train)),
        "precision": precision,
        "kernel": attention_kernel(inputs.device, precision),
    }
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    path = inputs.data.root / "cache" / f"flops-{key}.json"

    def read() -> dict[str, float] | None:
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return {k: float(kept[k]) for k in ("inference", "train_step")} if kept.get("what") == what else None

    hit = dist.broadcast(read() if dist.main else None)
    if hit is not None:
        return hit
    counted = per_image(inputs, precision)
    if dist.main:
        atomic.write_json(path, {**counted, "what": what})
    return counted
