"""Device and precision selection, and seeding."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from .errors import UserError


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
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name!r}: choose auto, cpu, cuda or mps")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, c, lambda: False)() for c in checks)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 where it is fast (see :func:`bf16_supported`) and fp32 elsewhere.

    bf16 is the default only because the benchmark's accuracy check (``make bench``:
    smoke-profile test accuracy of bf16 within 1 point of fp32) passed; see the README.
    """
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``precision == "bf16"``; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a tuple, e.g. (seed, epoch): the same batches after a resume."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
