"""Safetensors files that say what they hold: caches verified before use, weights refused by name.

A cache (decoded pixels, frozen features) is written with the identity of what it was
computed from and a sha256 of its own tensors in its header. :func:`read_cache` returns
it only when both still match; a truncated, edited, foreign or older file gives ``None``
and the caller recomputes it. :func:`read_weights` reads a run's trained tensors, and a
damaged file is one :class:`~vptlib.errors.UserError` naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load, save_file

from . import atomic
from .errors import UserError

DIGEST = "vptlib_sha256"  # the header key of the tensors' own hash


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # flat first: a 0-d tensor (FLYP's temperature) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(header metadata, tensors), read into memory: no memory map, so a file truncated or
    rewritten in place later cannot pull pages from under a tensor in use."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        raise ValueError("the header is larger than the file (truncated)")
    meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    return meta, load(data)


def write_cache(path: Path, tensors: dict[str, torch.Tensor], identity: dict[str, str]) -> None:
    """Write ``tensors`` atomically with ``identity`` and their digest in the header."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {**{k: str(v) for k, v in identity.items()}, DIGEST: digest(cpu)}
    atomic.atomic_write(path, lambda p: save_file(cpu, str(p), metadata=meta))


def read_cache(path: Path, identity: dict[str, str]) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when the file is missing, damaged, made from something
    else (its header's identity differs) or altered since written (its digest differs)."""
    if not path.is_file():
        return None
    try:
        meta, tensors = _read(path)
    except Exception:  # safetensors' own error types for a truncated or foreign file
        return None
    if any(meta.get(k) != str(v) for k, v in identity.items()) or meta.get(DIGEST) != digest(tensors):
        return None
    return tensors


def read_weights(path: Path, redo: str) -> dict[str, torch.Tensor]:
    """A run's trained tensors; a missing or damaged file is a :class:`UserError` saying ``redo``."""
    try:
        return _read(path)[1]
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {redo}") from None
    except Exception as exc:  # a truncated or overwritten file
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is damaged ({why}); {redo}") from None
