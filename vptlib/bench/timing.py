"""One configuration's cost, measured in this process: step times and peak memory.

Each configuration runs in its own process (:func:`one_process`) so that its peak memory
(RSS on the CPU, ``max_memory_allocated`` on CUDA) is its own. The model is built as the
engine builds it, frozen layers cast once to the autocast dtype included.
"""

from __future__ import annotations

import json
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from vptlib.data.augment import Augment
from vptlib.data.dataset import Preprocess, normalize
from vptlib.methods import METHODS as REGISTRY
from vptlib.models.offline import byte_level_tokenizer, tiny_clip_config, vit_b32_config
from vptlib.runs.devices import attention_kernel, autocast, cast_frozen, pick_device, set_attention
from vptlib.runs.flops import count

# Methods whose step costs the same as a measured one (WiSE-FT trains like `full`); a
# method that trains nothing costs one frozen forward.
SAME_COST = {"wise_ft": "full", **{m: "forward" for m, s in REGISTRY.items() if not s.trains}}
METHODS = tuple(m for m in REGISTRY if m not in SAME_COST)
ADAMW_FULL = ("full", "flyp", "text_ce")  # every weight trains: AdamW's two moments per weight count in memory
# Methods whose step is timed in turn with two no-grad forwards in the same process: the
# frozen backbone's plain forward (the yardstick of "step <= 2.3x a forward"; timed
# beside the step, a burst of load slows both alike) and the method's own forward (same
# tokens, same kernels: what a step costs beyond the forward it cannot avoid).
OWN_FORWARD = ("vpt_shallow", "vpt_deep")


def bench_model(tiny: bool):
    from types import SimpleNamespace

    from transformers import CLIPModel

    torch.manual_seed(0)
    cfg = tiny_clip_config() if tiny else vit_b32_config()
    return SimpleNamespace(model=CLIPModel(cfg).eval(), tokenizer=byte_level_tokenizer()), cfg.vision_config.image_size


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _warm_up(fn, device: torch.device, warmup: int, settle: int) -> None:
    last = None
    for i in range(warmup + settle if warmup else 0):
        t = _timed(fn, device)
        if i + 1 >= warmup and last is not None and abs(t - last) <= 0.1 * last:
            return
        last = t


def interleaved_times(
    fns: dict[str, Any], device: torch.device, steps: int, warmup: int, settle: int = 4
) -> dict[str, list[float]]:
    """Seconds of each of ``steps`` calls of every function in ``fns``, called in turn.

    Each function first warms up: ``warmup`` untimed calls, then up to ``settle`` more
    until two calls in a row agree within 10% (``warmup=0``: none at all). oneDNN builds
    its bf16 kernels over the first few calls (a bf16 ViT-B/32 forward took 0.55, 0.51,
    then 0.35 s), and one warm-up call let that cost into the timed steps. The timed calls
    then alternate (``a, b, a, b, ...``), so that a burst of load on the machine slows
    every function alike and their ratio survives it.
    """
    for fn in fns.values():
        _warm_up(fn, device, warmup, settle)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            times[name].append(_timed(fn, device))
    return times


def step_times(fn, device: torch.device, steps: int, warmup: int, settle: int = 4) -> list[float]:
    """Seconds of each of ``steps`` calls of ``fn`` after its warm-up (see :func:`interleaved_times`)."""
    return interleaved_times({"fn": fn}, device, steps, warmup, settle)["fn"]


def _step(
    kind: str, clip, x: torch.Tensor, y: torch.Tensor, precision: str, dev: torch.device, compile_: bool
) -> dict[str, Any]:
    """The functions to time, by name: ``step``, one training step (for ``forward``, one
    frozen forward). A method that sees images (not ``linear``) adds ``own_forward``, the
    trained model's no-grad forward on the same batch, and ``plain_forward``, the frozen
    backbone's forward through the same weights (cast and attention kernel included)
    where the method wraps one whole (VPT)."""
    from vptlib.methods import build

    if kind == "forward":
        # Frozen, as zero-shot, the linear probe's features and evaluation run it: then its
        # weights are cast once like every other frozen backbone's.
        vision = clip.model.vision_model.requires_grad_(False).to(dev)
        cast_frozen(vision, precision)
        set_attention(vision, attention_kernel(dev, precision))

        def forward():
            with torch.inference_mode(), autocast(dev, precision):
                vision(pixel_values=x)

        return {"step": forward}
    model = build(kind, clip, 4).to(dev).train()
    cast_frozen(model, precision)  # as the engine prepares a run
    set_attention(model, attention_kernel(dev, precision))
    run = torch.compile(model) if compile_ else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6) if kind in ADAMW_FULL else torch.optim.SGD(params, lr=1e-6)
    if model.uses_feature_cache:  # trains on cached features: the step never sees an image
        feats = torch.randn(len(x), model.head.in_features, device=dev)
        if model.feature_views:  # fitted from the views first, as the engine does (Tip-Adapter-F's
            # cache: one key per training image, the study's 480)
            views = torch.nn.functional.normalize(torch.randn(model.feature_views, 480, feats.shape[1]), dim=-1)
            model.fit_features({"views": (views.to(dev), (torch.arange(480) % 4).to(dev))})
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.SGD(params, lr=1e-6)

        def head_step():
            opt.zero_grad(set_to_none=True)
            model.loss(model.head(feats), y).backward()
            opt.step()

        return {"step": head_step}

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast(dev, precision):
            logits = run(x)
        model.loss(logits.float(), y).backward()
        opt.step()

    def own_forward():
        with torch.inference_mode(), autocast(dev, precision):
            model.eval()(x)
        model.train()

    fns = {"step": train_step, "own_forward": own_forward}
    vision = getattr(getattr(model, "encoder", None), "vision", None)
    if vision is not None:  # the frozen tower inside the prompted encoder, without its prompts

        def plain_forward():
            with torch.inference_mode(), autocast(dev, precision):
                vision(pixel_values=x)

        fns["plain_forward"] = plain_forward
    return fns


def measure(
    kind: str, precision: str, batch: int, steps: int, warmup: int, tiny: bool, device: str, compile_: bool = False
) -> dict[str, Any]:
    """One configuration, in this process: each step's seconds, their median, and peak memory."""
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    clip, size = bench_model(tiny)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.arange(batch, device=dev) % 4
    fns = _step(kind, clip, x, y, precision, dev, compile_)
    del clip
    if kind not in OWN_FORWARD or compile_:
        fns = {"step": fns["step"]}
    # A no-grad forward keeps no activations, so the peak below is still the steps'.
    times = interleaved_times(fns, dev, steps, warmup + (2 if compile_ else 0))
    seconds = statistics.median(times["step"])
    out = {
        "kind": kind + ("+compile" if compile_ else ""),
        "precision": precision,
        "seconds_per_step": seconds,
        "step_times": times["step"],
        "images_per_s": batch / seconds,
        "peak_bytes": _peak_bytes(dev),
        # Counted on one more step (not under torch.compile, whose graph hides its kernels):
        # the work a step does, for the fraction of the machine's matmul peak it reaches.
        "flops_per_step": None if compile_ else count(fns["step"]),
    }
    for name in ("own_forward", "plain_forward"):
        if name in times:
            out[f"{name}_seconds"] = statistics.median(times[name])
    return out


def data_throughput(batch: int, size: int, device: str, steps: int = 20) -> float:
    """Images per second of the cached-uint8 pipeline: index, augment, normalise."""
    dev = pick_device(device)
    pixels = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8, device=dev)
    aug, prep, gen = Augment(), Preprocess(size, size), torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(0, len(pixels), (batch,), generator=gen).to(dev)
        normalize(aug(pixels[idx], gen), prep)

    return batch / statistics.median(step_times(step, dev, steps, 2))


def machine_name(device: torch.device, threads: int | None = None) -> str:
    """The device's name, a CPU's with the threads measured on (torch's, or ``threads``)."""
    if device.type == "cuda":
        desc = torch.cuda.get_device_name(device)
    else:
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(line.split(":", 1)[1] for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            cpu = platform.processor() or platform.machine()
        desc = f"{cpu.strip()} {threads or torch.get_num_threads()}t"
    return re.sub(r"[^a-z0-9]+", "-", desc.lower()).strip("-")


def one_process(kind: str, precision: str, args, compile_: bool = False) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (its own peak memory, no state from the others)."""
    return run_json(["--one", kind, precision, *(["--compile-one"] if compile_ else [])], args)


def run_json(flags: list[str], args) -> Any:
    """``python -m vptlib.bench <flags>`` in a fresh process, with the bench's size arguments;
    its last line of output, read as JSON."""
    cmd = [sys.executable, "-m", "vptlib.bench", *flags]
    cmd += ["--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--device", args.device, *(["--tiny"] if args.tiny else [])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"benchmark {' '.join(flags)} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
