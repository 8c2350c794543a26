"""A staged run: what its trainable part consumes, staged once on the training device.

Methods that train only a head on a frozen backbone (``uses_feature_cache``) read frozen
features, computed once per (backbone, manifest, preprocessing, precision) and cached
under the data folder; every other method reads uint8 pixels, augmented and normalised
on the device, so the data pipeline never waits on the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from vptlib import tensorfile
from vptlib.data.augment import Augment
from vptlib.data.dataset import Data, normalize
from vptlib.errors import UserError
from vptlib.methods import Classifier

from .devices import attention_kernel, autocast
from .parallel import Dist

if TYPE_CHECKING:
    from .config import RunConfig


class StagedRun:
    """What the trainable part consumes: cached features, or uint8 pixels to augment/normalise.

    Pixels stay uint8 on the training device (pinned for the one copy to a GPU) and are
    augmented there, so the data pipeline never waits on the host.
    """

    def __init__(
        self, model: Classifier, data: Data, cfg: RunConfig, device: torch.device, model_fingerprint: str, dist: Dist
    ):
        self.model, self.data, self.cfg, self.device = model, data, cfg, device
        self.features = model.uses_feature_cache
        # A run that may not look at test (a tuning grid's point) never holds the test split:
        # no code path, however it is written, can score it.
        names = staged_splits(cfg)
        if self.features:
            self.splits = _feature_cache(model, data, cfg, device, model_fingerprint, dist, names)
        else:
            self.splits = {
                s: (_to(getattr(data, s).pixels, device), _to(getattr(data, s).labels, device)) for s in names
            }
        self.augment = Augment() if cfg.augment and not self.features else None
        self.eval_seconds = 0.0  # time spent in evaluate(), for the run's cost breakdown
        # The module a training step calls: the trainable part, wrapped for DDP when parallel.
        trains = model.head if self.features else model
        self.train_module = dist.wrap(trains, find_unused=model.unused_params_possible) if cfg.epochs else trains
        if cfg.compile:
            self.train_module = torch.compile(self.train_module)

    def logits(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if self.features:
            return (self.train_module if train else self.model.head)(x)
        if train:
            return self.train_module(normalize(x, self.data.prep))
        return self.model(normalize(x, self.data.prep))


def staged_splits(cfg: RunConfig) -> tuple[str, ...]:
    """The splits a run holds: train and val, and test only when it may be evaluated."""
    return ("train", "val", "test") if cfg.evaluate_test else ("train", "val")


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _feature_cache(
    model, data: Data, cfg: RunConfig, device, model_fingerprint: str, dist: Dist, names: tuple[str, ...]
) -> dict:
    """Frozen features for every split, computed once per (backbone, manifest, preprocessing, precision).

    Under data parallelism the main process computes them and the others load its file.
    """
    kernel = attention_kernel(device, cfg.precision)  # eager and SDPA round differently under bf16
    key = f"features-{model_fingerprint}-{data.manifest_hash}-{data.prep.key()}-{cfg.precision}-{kernel}"
    path = data.root / "cache" / f"{key}.safetensors"
    identity = {"key": key, "rows": ",".join(str(len(_full(data, s))) for s in ("train", "val", "test"))}
    if dist.main and tensorfile.read_cache(path, identity) is None:  # missing, damaged or not these features
        feats = {}
        for s in ("train", "val", "test"):
            split = _full(data, s)
            chunks = []
            for i in tqdm(range(0, len(split), cfg.batch_size), desc=f"features ({s})", leave=False):
                x = normalize(split.pixels[i : i + cfg.batch_size].to(device), data.prep)
                with torch.inference_mode(), autocast(device, cfg.precision):
                    chunks.append(model.features(x).float().cpu())
            feats[s] = torch.cat(chunks) if chunks else torch.zeros(0, model.head.in_features)
        tensorfile.write_cache(path, feats, identity)
    dist.barrier()
    feats = tensorfile.read_cache(path, identity)
    if feats is None:
        raise UserError(f"{path} could not be read back after writing it; check the disk, then rerun")
    out = {}
    for s in names:
        split = getattr(data, s)
        f = feats[s]
        if _full(data, s) is not split:  # a few-shot subset of the cached split
            f = f[_subset_rows(_full(data, s).paths, split.paths)]
        out[s] = (f.to(device), split.labels.to(device))
    return out


def _full(data: Data, split: str):
    """The whole split whose features are cached, also when the run uses a few-shot subset of it."""
    full = {"train": data.train_full, "val": data.val_full}.get(split)
    return full if full is not None else getattr(data, split)


def _subset_rows(all_paths: list[str], kept: list[str]) -> list[int]:
    where = {p: i for i, p in enumerate(all_paths)}
    return [where[p] for p in kept]
