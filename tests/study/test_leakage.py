"""Leakage and the image-shape floor, on hand-made manifests and the prepared phantoms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vptlib import report
from vptlib.study.leakage import dedup_accuracy, leaked_test_images
from vptlib.study.shortcuts import shape_floor


def _manifest(n: int, informative: bool, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    classes = np.array(["glioma", "meningioma", "notumor", "pituitary"])[rng.integers(0, 4, n)]
    if informative:  # each class has its own shape, as the Kaggle no-tumour images partly do
        width = np.array([{"glioma": 512, "meningioma": 512, "notumor": 300, "pituitary": 512}[c] for c in classes])
        height = np.array([{"glioma": 512, "meningioma": 400, "notumor": 350, "pituitary": 600}[c] for c in classes])
    else:
        width = height = np.full(n, 512)
    split = np.where(np.arange(n) < 3 * n // 4, "train", "test")
    return pd.DataFrame({"class": classes, "split": split, "width": width, "height": height, "excluded": ""})


def test_shape_floor_finds_a_planted_shortcut_and_nothing_else():
    assert shape_floor(_manifest(400, informative=True))["accuracy"] == pytest.approx(1.0)
    r = shape_floor(_manifest(400, informative=False))
    assert r["accuracy"] <= r["majority_rate"] + 0.05  # nothing to learn: no better than the majority class
    assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]


def test_leaked_and_dedup_accuracy(tmp_path):
    pd.DataFrame(
        [
            {"a": "tr/1.jpg", "b": "te/1.jpg", "a_split": "train", "b_split": "test", "kind": "exact", "distance": 0},
            {"a": "te/2.jpg", "b": "va/2.jpg", "a_split": "test", "b_split": "val", "kind": "near", "distance": 3},
            {"a": "te/3.jpg", "b": "te/4.jpg", "a_split": "test", "b_split": "test", "kind": "exact", "distance": 0},
        ]
    ).to_csv(tmp_path / "duplicates.csv", index=False)
    assert leaked_test_images(tmp_path) == {"te/1.jpg", "te/2.jpg"}  # within-test pairs do not leak
    preds = pd.DataFrame(
        {"path": ["te/1.jpg", "te/2.jpg", "te/3.jpg", "te/4.jpg"], "true": list("aabb"), "pred": list("aaab")}
    )
    row = dedup_accuracy({"m": preds}, tmp_path).iloc[0]
    assert row["raw acc (%)"] == 75.0 and row["de-duplicated images"] == 2 and row["de-duplicated acc (%)"] == 50.0


def test_dataset_page_sentence(prepared):
    text = report.shape_floor_markdown(prepared)
    assert "aspect ratio" in text and "%" in text


@pytest.fixture(scope="module")
def planted_source(tmp_path_factory):
    """Phantoms with 8 mirrored, 8 two-pixel-shifted and 8 5%-cropped copies of training images
    placed among the test images."""
    import random

    from PIL import Image, ImageOps

    from vptlib.data.phantoms import write_phantoms

    tmp = tmp_path_factory.mktemp("copies")
    src = write_phantoms(tmp / "src", per_class=40, size=128, seed=0)
    originals = random.Random(0).sample(sorted((src / "Training").rglob("*.jpg")), 24)
    for k, f in enumerate(originals):
        img = Image.open(f).convert("RGB")
        w, h = img.size
        kind = ("mirror", "shift", "crop")[k % 3]
        if kind == "mirror":
            copy = ImageOps.mirror(img)
        elif kind == "shift":
            copy = Image.new("RGB", (w, h))
            copy.paste(img, (2, 2))
        else:
            copy = img.crop((round(w * 0.025), round(h * 0.025), w - round(w * 0.025), h - round(h * 0.025)))
        copy.save(src / "Testing" / f.parent.name / f"copy_{kind}_{k}_{f.stem}.jpg", quality=95)
    return src


def _prepared(src, out, keep: bool):
    from vptlib.data.prepare import PrepareOptions, prepare

    prepare(PrepareOptions(src, out, train_per_class="all", test_per_class=30, seed=0, keep_duplicates=keep))
    return out


def test_the_audit_and_prepare_share_one_definition_of_a_copy(planted_source, tmp_path):
    """Kept (``--keep-duplicates``), the 24 planted copies are exactly what the audit lists as
    copies, each with its original and kind; drawn by cluster, the audit lists none, and no
    planted copy sits in test beside its original in training."""
    from vptlib.data.copies import SIMILAR
    from vptlib.data.manifest import read_manifest
    from vptlib.study.leakage import nearest_training

    kept = _prepared(planted_source, tmp_path / "kept", keep=True)
    nn = nearest_training(kept)
    test = set(read_manifest(kept).query("split == 'test'").path)
    planted = {p for p in test if "/copy_" in p}
    assert set(nn.test[nn["copy"] != ""]) == planted and nn["copy"][: len(planted)].ne("").all()
    for r in nn[nn["copy"] != ""].itertuples():
        assert r.nearest.rsplit("/", 1)[1] == r.test.rsplit("/", 1)[1].split("_", 3)[3]  # copy_<kind>_<k>_<original>
    kinds = {r.test.split("copy_")[1].split("_")[0]: r.copy for r in nn[nn["copy"] != ""].itertuples()}
    assert kinds["mirror"] == "mirrored" and kinds["shift"] == "shifted"
    table = report.nearest_table(nn)
    assert len(table) == len(planted) and f"{len(planted)} have a copy" in report.nearest_markdown(nn)
    assert len(report.nearest_pairs(nn, kept, k=4).axes) == 8
    assert report.plot_nearest(nn).axes[0].get_xlabel().startswith("similarity")
    drawn = _prepared(planted_source, tmp_path / "drawn", keep=False)
    nn = nearest_training(drawn)
    assert nn["copy"].eq("").all() and "none has a copy" in report.nearest_markdown(nn)
    assert (nn.similarity < SIMILAR).all()
    chosen = read_manifest(drawn)
    stems = {p.rsplit("/", 1)[1].rsplit(".", 1)[0] for p in chosen.path}
    for p in chosen.path[chosen.path.str.contains("/copy_")]:
        assert p.rsplit("/", 1)[1].split("_", 3)[3].rsplit(".", 1)[0] not in stems  # its original was skipped


def _phantoms_saved_at(root, qualities: dict[str, int]):
    """Phantoms with each class re-saved at its own JPEG quality: a file-level shortcut, planted."""
    from PIL import Image

    from vptlib.data.phantoms import write_phantoms

    src = write_phantoms(root, per_class=30, size=96, seed=3)
    for f in src.rglob("*.jpg"):
        Image.open(f).convert("RGB").save(f, quality=qualities.get(f.parent.name, 90))
    return src


def test_the_file_floor_finds_a_planted_compression_shortcut(tmp_path):
    """Each class saved at its own JPEG quality: the file alone names the class. Saved alike,
    the file floor stays far below that, and both floors say what they saw."""
    from vptlib.data.prepare import PrepareOptions, prepare
    from vptlib.report.loading import manifest
    from vptlib.study.shortcuts import low_level_floors

    planted = _phantoms_saved_at(tmp_path / "a", {"glioma": 30, "meningioma": 55, "notumor": 75, "pituitary": 95})
    prepare(PrepareOptions(planted, tmp_path / "pa", train_per_class=20, test_per_class=20, seed=0))
    floors = low_level_floors(tmp_path / "pa", manifest(tmp_path / "pa"))
    assert floors["file"]["accuracy"] >= 0.95
    alike = _phantoms_saved_at(tmp_path / "b", {})
    prepare(PrepareOptions(alike, tmp_path / "pb", train_per_class=20, test_per_class=20, seed=0))
    plain = low_level_floors(tmp_path / "pb", manifest(tmp_path / "pb"))["file"]
    assert plain["accuracy"] < 0.9 and plain["ci_low"] <= plain["accuracy"] <= plain["ci_high"]
    text = report.low_level_floor_markdown(tmp_path / "pa")
    assert "JPEG quantisation" in text and "grey-level histogram" in text and "%" in text


def test_the_clip_embedding_audit_pairs_every_test_image_with_its_nearest(tmp_path, pretrained_tiny):
    """A test image kept as an exact copy of a training image (``--keep-duplicates``) is its
    own nearest neighbour at cosine 1 and heads the list; the cosine is that of CLIP's
    projected image embeddings (Hugging Face's get_image_features)."""
    import shutil

    import torch
    import torch.nn.functional as F
    from PIL import Image

    from vptlib.data.dataset import Preprocess, load_data, normalize
    from vptlib.data.phantoms import write_phantoms
    from vptlib.data.prepare import PrepareOptions, prepare
    from vptlib.models.backbone import load_clip
    from vptlib.study.leakage import nearest_by_features

    src = write_phantoms(tmp_path / "src", per_class=12, size=96, seed=1)
    original = sorted((src / "Training" / "glioma").glob("*.jpg"))[0]
    shutil.copy(original, src / "Testing" / "glioma" / "copy_exact.jpg")
    prepare(
        PrepareOptions(src, tmp_path / "out", train_per_class=None, test_per_class=None, seed=0, keep_duplicates=True)
    )
    nn = nearest_by_features(tmp_path / "out", str(pretrained_tiny))
    data = load_data(tmp_path / "out", Preprocess(), progress=False)
    assert sorted(nn.test) == sorted(data.test.paths) and set(nn.split) <= {"train", "val"}
    assert list(nn.similarity) == sorted(nn.similarity, reverse=True) and (nn.similarity <= 1 + 1e-5).all()
    top = nn.iloc[0]
    assert top.test.endswith("copy_exact.jpg") and top.similarity == pytest.approx(1.0, abs=1e-5)
    assert Image.open(tmp_path / "out" / top.nearest).tobytes() == Image.open(original).tobytes()
    clip = load_clip(pretrained_tiny)
    prep = Preprocess.from_processor(clip.processor)
    data = load_data(tmp_path / "out", prep, progress=False)
    i, j = data.test.paths.index(nn.test.iloc[-1]), (data.train.paths + data.val.paths).index(nn.nearest.iloc[-1])
    pool = torch.cat([data.train.pixels, data.val.pixels])
    with torch.no_grad():
        a = clip.model.get_image_features(pixel_values=normalize(data.test.pixels[i : i + 1], prep))
        b = clip.model.get_image_features(pixel_values=normalize(pool[j : j + 1], prep))
    a, b = (getattr(t, "pooler_output", t) for t in (a, b))
    assert float(F.cosine_similarity(a, b)) == pytest.approx(nn.similarity.iloc[-1], abs=1e-4)
    axes = report.plot_nearest(nn, flag=False).axes[0]
    assert "CLIP image embedding" in axes.get_xlabel() and not axes.get_lines()
