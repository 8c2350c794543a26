"""A staged run: what its trainable part consumes, staged once on the training device.

Methods that train only a head on a frozen backbone (``uses_feature_cache``) read frozen
features, computed once per (backbone, manifest, preprocessing, precision) and cached
under the data folder; every other method reads uint8 pixels, augmented and normalised
on the device, so the data pipeline never waits on the host.
"""

from __future__ import annotations

import functools
import hashlib
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
        self.dist, self.model_fingerprint = dist, model_fingerprint
        self.features = model.uses_feature_cache
        # A run that may not look at test (a tuning grid's point) never holds the test split:
        # no code path, however it is written, can score it.
        names = staged_splits(cfg)
        # (V, N, D) augmented views of the training features and their labels (feature_views).
        self.views: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.features:
            self.splits = _feature_cache(self, names)
            if model.feature_views:
                self.views = _view_cache(model, data, cfg, device, model_fingerprint, dist)
        else:
            self.splits = {
                s: (_to(getattr(data, s).pixels, device), _to(getattr(data, s).labels, device)) for s in names
            }
        self.augment = Augment() if cfg.augment and not self.features else None
        self.eval_seconds = 0.0  # time spent in evaluate(), for the run's cost breakdown

    @functools.cached_property
    def train_module(self) -> torch.nn.Module:
        """The module a training step calls: the trainable part, wrapped for DDP when parallel.

        Made on first use, after ``fit_features``: a method that sizes its trainable tensors
        from the data there (Tip-Adapter-F's cache keys) is wrapped with its final tensors."""
        trains = self.model.head if self.features else self.model
        if self.cfg.epochs:
            trains = self.dist.wrap(trains, find_unused=self.model.unused_params_possible)
        return torch.compile(trains) if self.cfg.compile else trains

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


def _feature_cache(run: StagedRun, names: tuple[str, ...]) -> dict:
    """Frozen features for every split, computed once per (backbone, manifest, preprocessing, precision).

    Under data parallelism the main process computes them and the others load its file.
    """
    model, data, cfg, device, model_fingerprint, dist = (
        run.model,
        run.data,
        run.cfg,
        run.device,
        run.model_fingerprint,
        run.dist,
    )
    kernel = attention_kernel(device, cfg.precision)  # eager and SDPA round differently under bf16
    key = f"features-{_feature_key(model, model_fingerprint, data, cfg.precision, kernel)}"
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


def _feature_key(model, model_fingerprint: str, data: Data, precision: str, kernel: str) -> str:
    """What decides a cached feature: the backbone, the data, the preprocessing, the precision,
    the attention kernel, and which features the method reads (the linear probe's post-LN CLS
    feature, CLAP's projected one, Tip-Adapter-F's unit-norm projected one): the class that
    defines the method's ``features``, so two methods share a cache only when they share it."""
    owner = next(c for c in type(model).__mro__ if "features" in vars(c))
    what = hashlib.sha256(f"{owner.__module__}.{owner.__qualname__}".encode()).hexdigest()[:8]
    return f"{model_fingerprint}-{data.manifest_hash}-{data.prep.key()}-{precision}-{kernel}-{what}"


# The views' augmentation is drawn from these seeds, not from the run's: the cache is shared by
# every run and seed on one (backbone, data, preprocessing, precision), as the plain features are.
VIEW_SEED = 20220709


def _view_cache(model, data: Data, cfg: RunConfig, device, model_fingerprint: str, dist: Dist) -> tuple:
    """``(V, N, D)`` features of V augmented views of the training split (the run's few-shot
    rows of it), with their labels: computed once per (backbone, manifest, preprocessing,
    precision, augmentation, V), as :func:`_feature_cache` does for the plain features."""
    augment, n_views = Augment(), model.feature_views
    key = _feature_key(model, model_fingerprint, data, cfg.precision, attention_kernel(device, cfg.precision))
    path = data.root / "cache" / f"views{n_views}-{key}.safetensors"
    split = _full(data, "train")
    identity = {"key": key, "rows": str(len(split)), "augment": repr(augment), "views": str(n_views)}
    if dist.main and tensorfile.read_cache(path, identity) is None:
        views = []
        for v in tqdm(range(n_views), desc="augmented views (train)", leave=False):
            gen, chunks = torch.Generator().manual_seed(VIEW_SEED + v), []
            for i in range(0, len(split), cfg.batch_size):
                x = normalize(augment(split.pixels[i : i + cfg.batch_size].to(device), gen), data.prep)
                with torch.inference_mode(), autocast(device, cfg.precision):
                    chunks.append(model.features(x).float().cpu())
            views.append(torch.cat(chunks) if chunks else torch.zeros(0, model.head.in_features))
        tensorfile.write_cache(path, {"views": torch.stack(views)}, identity)
    dist.barrier()
    cached = tensorfile.read_cache(path, identity)
    if cached is None:
        raise UserError(f"{path} could not be read back after writing it; check the disk, then rerun")
    views = cached["views"]
    if split is not data.train:  # a few-shot subset of the cached split
        views = views[:, _subset_rows(split.paths, data.train.paths)]
    return views.to(device), data.train.labels.to(device)


def _full(data: Data, split: str):
    """The whole split whose features are cached, also when the run uses a few-shot subset of it."""
    full = {"train": data.train_full, "val": data.val_full}.get(split)
    return full if full is not None else getattr(data, split)


def _subset_rows(all_paths: list[str], kept: list[str]) -> list[int]:
    where = {p: i for i, p in enumerate(all_paths)}
    return [where[p] for p in kept]
