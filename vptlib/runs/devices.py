"""Device and precision selection, and seeding.

Precision is decided once per run and recorded resolved (``fp32``, ``bf16`` or
``fp16``), so a reloaded run computes exactly as it did:

* ``bf16`` autocast where bf16 is *fast*: CUDA GPUs of compute capability 8.0 or
  newer (A100, L4, H100, ...) and CPUs with AVX512-BF16 or AMX. Older GPUs (T4, V100,
  P100: the free GPUs of Colab and Kaggle) report ``torch.cuda.is_bf16_supported()``
  but only emulate it, slowly; they are never given bf16 by ``auto``;
* ``fp16`` autocast with a gradient scaler on CUDA GPUs of capability 7.0 to 7.x,
  whose tensor cores are fp16-only;
* ``fp32`` everywhere else.

``VPTLIB_FAST_BF16=1`` or ``=0`` overrides the bf16 detection (a CPU whose flags are
hidden by a VM, or a test that must not depend on the machine it runs on).
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from vptlib.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FAST_BF16_ENV = "VPTLIB_FAST_BF16"
BF16_MIN_CAPABILITY = (8, 0)  # Ampere: native bf16 tensor cores
FP16_MIN_CAPABILITY = (7, 0)  # Volta/Turing: fp16 tensor cores


DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple MPS, then the CPU; an unavailable device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch (use --device auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple MPS is not available here (use --device auto or cpu)")
    if name not in DEVICES:
        raise UserError(f"--device {name!r}: choose {', '.join(DEVICES)}")
    return torch.device(name)


def _forced_bf16() -> bool | None:
    value = os.environ.get(FAST_BF16_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    if value:
        raise UserError(f"{FAST_BF16_ENV}={value!r}: use 1 (bf16 is fast here) or 0 (it is not)")
    return None


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is *fast* here: CUDA capability >= 8.0, or a CPU with AVX512-BF16/AMX."""
    forced = _forced_bf16()
    if forced is not None:
        return forced
    if device.type == "cuda":
        # is_bf16_supported() is also True where bf16 is only emulated (T4, V100): ask the hardware.
        return torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, c, lambda: False)() for c in checks)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where it is fast, ``fp16`` on fp16-only GPUs, else ``fp32``.

    bf16 is the default only because the benchmark's accuracy check (``make bench``:
    smoke-profile test accuracy of bf16 within 1 point of fp32) passed; see the README.
    """
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if bf16_supported(device):
        return "bf16"
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP16_MIN_CAPABILITY:
        return "fp16"
    return "fp32"


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """bf16 or fp16 autocast for those precisions; a no-op context for fp32."""
    if precision in _DTYPES:
        return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
    return contextlib.nullcontext()


def cast_frozen(model: torch.nn.Module, precision: str) -> int:
    """Store the frozen weights of ``model``'s linear and convolution layers in the autocast dtype, once.

    Under autocast every matmul and convolution casts its fp32 weight to bf16/fp16 again at
    every call, in every step; for a frozen backbone that is most of a step's memory
    traffic. Casting once rounds exactly as autocast does (round to nearest even), so the
    logits are bit-identical, and the trainable tensors (prompts, heads, LoRA factors) stay
    fp32 masters. Layer norms, embeddings and the residual stream are left in fp32. Only
    modules none of whose own parameters train are cast, so a method that unfreezes a
    layer later must do so before this is called. Returns how many layers were cast; fp32
    casts nothing.
    """
    dtype = _DTYPES.get(precision)
    if dtype is None:
        return 0
    cast = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and own and not any(p.requires_grad for p in own):
            module.to(dtype)
            cast += 1
    return cast


def attention_kernel(device: torch.device, precision: str) -> str:
    """The attention implementation a run uses: ``eager`` for bf16/fp16 on a CPU, else ``sdpa``.

    On a CPU, PyTorch's SDPA flash-attention *backward* in bf16 is slow for CLIP's short
    sequences: profiled on an AMX Xeon it took 38% of a VPT-deep step (about ten times its
    forward), while eager attention (batched matmuls and a softmax) made the bf16 step
    1.47x faster at the same forward cost. On GPUs SDPA stays. The kernel is recorded
    with the run, and its predictor uses the same one.
    """
    return "eager" if device.type == "cpu" and precision in _DTYPES else "sdpa"


def set_attention(model: torch.nn.Module, kernel: str) -> None:
    """Make every CLIP attention layer in ``model`` use ``kernel`` (transformers reads it per call)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = kernel


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16, whose gradients underflow without one; disabled (a no-op) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a tuple, e.g. (seed, epoch): the same batches after a resume."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
