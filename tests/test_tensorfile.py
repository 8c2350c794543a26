"""Verified tensor files: the digest covers every tensor kind a run or cache holds."""

from __future__ import annotations

import pytest
import torch

from vptlib import tensorfile


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.uint8, torch.int64, torch.bool])
def test_the_digest_covers_scalars_empty_and_every_dtype(dtype):
    tensors = {
        "scalar": torch.tensor(1, dtype=dtype),
        "empty": torch.zeros(0, 3, dtype=dtype),
        "matrix": torch.ones(2, 3, dtype=dtype),
    }
    d = tensorfile.digest(tensors)
    assert d == tensorfile.digest({k: v.clone() for k, v in tensors.items()})
    changed = {**tensors, "scalar": torch.tensor(0, dtype=dtype)}
    assert tensorfile.digest(changed) != d
    assert tensorfile.digest({**tensors, "matrix": torch.ones(3, 2, dtype=dtype)}) != d  # the shape counts


def test_a_cache_round_trips_and_refuses_another_identity(tmp_path):
    path = tmp_path / "c.safetensors"
    tensorfile.write_cache(path, {"t": torch.arange(4.0), "s": torch.tensor(2.0)}, {"key": "a"})
    got = tensorfile.read_cache(path, {"key": "a"})
    assert torch.equal(got["t"], torch.arange(4.0)) and got["s"].item() == 2.0
    assert tensorfile.read_cache(path, {"key": "b"}) is None
    assert tensorfile.read_cache(tmp_path / "missing.safetensors", {}) is None
