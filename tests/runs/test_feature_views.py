"""Cached augmented views of the training features (``feature_views``): Tip-Adapter-F's
cache and CLAP's training set. Computed once per backbone and data, shared by runs and
seeds, subset for few-shot runs, and walked the way each method's epoch walks them."""

from __future__ import annotations

import hashlib
import shutil
from types import SimpleNamespace

import torch
from helpers import tiny_config

from vptlib.models.backbone import load_clip
from vptlib.runs.engine import run
from vptlib.runs.training import steps_per_epoch, train_examples


def _views(prepared):
    return sorted((prepared / "cache").glob("views*.safetensors"))


def test_views_are_cached_once_and_shared_by_seeds(prepared, tiny_model, tmp_path):
    # A copy of the data without its cache: the shared folder holds whatever views other tests on
    # this worker cached (GDA's, or Tip-Adapter-F's on another model), which this count must not see.
    data = tmp_path / "data"
    shutil.copytree(prepared, data, symlinks=True, ignore=shutil.ignore_patterns("cache", ".vptlib.lock"))
    a = run(tiny_config(data, tiny_model, tmp_path, method="tip_adapter_f", epochs=1), progress=False)
    files = _views(data)
    assert len(files) == 1 and files[0].name.startswith("views10-")
    # The cache key ends with the class whose features it holds: Tip-Adapter-F's own.
    assert files[0].stem.endswith(hashlib.sha256(b"vptlib.methods.tip_adapter.TipAdapterF").hexdigest()[:8])
    stamp = files[0].stat().st_mtime_ns
    b = run(tiny_config(data, tiny_model, tmp_path, method="tip_adapter_f", epochs=1, seed=1), progress=False)
    assert _views(data) == files  # no second file
    assert files[0].stat().st_mtime_ns == stamp  # the second seed read the cache, did not redo it
    dim = load_clip(tiny_model).model.config.projection_dim
    assert a.metrics["trainable_params"] == b.metrics["trainable_params"] == a.metrics["train_images"] * dim


def test_a_few_shot_run_caches_only_its_own_images(prepared, tiny_model, tmp_path):
    res = run(
        tiny_config(prepared, tiny_model, tmp_path, method="tip_adapter_f", epochs=1, train_per_class=3),
        progress=False,
        keep_model=True,
    )
    head = res.model.head
    assert head.keys.shape[0] == 12 and head.values.sum(0).tolist() == [3.0] * 4  # 3 images a class


def _inputs(n: int, views: int, covers: bool, full: int | None = None):
    labels = torch.arange(n) % 4
    data = SimpleNamespace(train=list(range(n)), train_full=list(range(full)) if full else None)
    return SimpleNamespace(
        data=data,
        splits={"train": (torch.zeros(n, 8), labels)},
        views=(torch.randn(views, n, 8), labels) if views else None,
        model=SimpleNamespace(epoch_draws_views=covers, full_batch=False),
    )


def test_an_epoch_over_views_takes_a_loader_over_the_images_worth_of_batches():
    """CLAP's run_epoch: len(train_loader_x) batches (Dassl: drop_last when N >= batch, so
    N // batch, else 1), drawn from the pool of every image's views."""
    cfg = SimpleNamespace(batch_size=16, epoch_steps="pass")
    clap_like, tip_like = _inputs(40, 20, covers=True), _inputs(40, 10, covers=False)
    assert steps_per_epoch(cfg, clap_like) == 40 // 16 and steps_per_epoch(cfg, tip_like) == 3
    assert steps_per_epoch(cfg, _inputs(10, 20, covers=True)) == 1  # fewer images than a batch: one
    x, y = train_examples(clap_like)
    assert x.shape == (800, 8) and torch.equal(x[40], clap_like.views[0][1, 0]) and torch.equal(y[40], y[0])
    assert train_examples(tip_like)[0] is tip_like.splits["train"][0]  # one view per image, drawn per epoch


def test_methods_reading_different_features_never_share_a_cache(prepared, tiny_model, tmp_path):
    """The linear probe caches the post-LN CLS feature, CLAP the projected one, Tip-Adapter-F
    the unit-norm projected one: one data folder holds each, and each run reads its own."""
    for method in ("linear", "clap", "tip_adapter_f"):
        res = run(tiny_config(prepared, tiny_model, tmp_path, method=method, epochs=1), progress=False, keep_model=True)
        x = res.model.features(torch.zeros(1, 3, 112, 112)).float()
        assert res.model.head(x).shape == (1, 4), method
    widths = {load_file_width(p) for p in (prepared / "cache").glob("features-*.safetensors")}
    clip = load_clip(tiny_model).model.config
    assert {clip.vision_config.hidden_size, clip.projection_dim} <= widths


def load_file_width(path) -> int:
    from safetensors.torch import load_file

    return load_file(str(path))["train"].shape[1]
