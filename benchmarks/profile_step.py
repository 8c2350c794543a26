"""Where one training step's time goes: ``torch.profiler`` over a few steps of one method.

    python benchmarks/profile_step.py vpt_deep bf16 [--shapes] [--activation identity]

Builds the model as ``make bench`` does (ViT-B/32 architecture, random weights, batch 32,
frozen layers cast once) and prints the op table. ``--activation identity`` replaces
CLIP's QuickGELU, an A/B that shows the activation's share of a step (not a valid model).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from vptlib.bench.timing import _model, _step
from vptlib.runs.devices import pick_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind")
    p.add_argument("precision", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--shapes", action="store_true", help="group the table by input shape")
    p.add_argument("--activation", choices=["quick_gelu", "identity"], default="quick_gelu")
    args = p.parse_args()
    dev = pick_device("auto")
    clip, size = _model(tiny=False)
    if args.activation == "identity":
        for layer in clip.model.vision_model.encoder.layers:
            layer.mlp.activation_fn = torch.nn.Identity()
    x = torch.randn(32, 3, size, size, device=dev)
    y = torch.arange(32, device=dev) % 4
    fns = _step(args.kind, clip, x, y, args.precision, dev, False)
    step = fns["step"]
    for name, fn in fns.items():
        for _ in range(4):  # warm-up: oneDNN builds its kernels over the first calls
            fn()
        times = []
        for _ in range(8):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"{name}: median {statistics.median(times):.3f} s over 8 calls")
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        for _ in range(args.steps):
            step()
    table = prof.key_averages(group_by_input_shape=args.shapes)
    print(table.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=40))


if __name__ == "__main__":
    main()
