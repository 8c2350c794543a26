"""Planted exact and near duplicates are found, within and across splits, and can be dropped."""

from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest
from PIL import Image

from vptlib.dataset import read_manifest
from vptlib.prepare import PrepareOptions, prepare


@pytest.fixture(scope="module")
def planted(phantom_source, tmp_path_factory):
    src = tmp_path_factory.mktemp("dups")
    shutil.copytree(phantom_source, src, dirs_exist_ok=True)
    train = sorted((src / "Training" / "meningioma").glob("*.jpg"))
    test_dir = src / "Testing" / "meningioma"
    # Replace two test images: one byte-identical copy, one re-encoded + rescaled copy.
    victims = sorted(test_dir.glob("*.jpg"))[:2]
    shutil.copyfile(train[0], victims[0])
    img = Image.open(train[1]).convert("RGB").resize((160, 160), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    victims[1].write_bytes(buf.getvalue())
    # Every training and test image is chosen, so the planted pairs are in the subset.
    return src, [train[0].name, train[1].name], [v.name for v in victims]


def _run(src, out, drop=False):
    prepare(PrepareOptions(src, out, train_per_class=40, test_per_class=40, val_fraction=0.0,
                           drop_test_duplicates=drop))  # fmt: skip
    return pd.read_csv(out / "duplicates.csv", dtype=str)


def test_exact_and_near_duplicates_found_across_splits(planted, tmp_path):
    src, train_names, test_names = planted
    dups = _run(src, tmp_path / "o")
    cross = dups[(dups.a_split == "train") & (dups.b_split == "test")]
    found = {(a.split("/")[-1], b.split("/")[-1], k) for a, b, k in zip(cross.a, cross.b, cross.kind, strict=True)}
    assert (train_names[0], test_names[0], "exact") in found
    assert (train_names[1], test_names[1], "near") in found
    # Nothing else among 320 distinct phantoms is called a duplicate.
    assert len(dups) == 2, dups


def test_within_split_duplicates_found(phantom_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    files = sorted((src / "Training" / "glioma").glob("*.jpg"))
    shutil.copyfile(files[0], files[1])
    dups = _run(src, tmp_path / "o")
    assert ((dups.a_split == "train") & (dups.b_split == "train") & (dups.kind == "exact")).sum() == 1


def test_drop_test_duplicates_excludes_and_records(planted, tmp_path):
    src, _, test_names = planted
    _run(src, tmp_path / "o", drop=True)
    df = pd.read_csv(tmp_path / "o" / "manifest.csv", dtype=str, keep_default_na=False)
    excluded = df[df.excluded != ""]
    assert sorted(excluded.source.str.split("/").str[-1]) == sorted(test_names)
    assert excluded.excluded.str.contains("duplicate of train image").all()
    kept = read_manifest(tmp_path / "o")
    assert len(kept[kept.split == "test"]) == 160 - 2
    assert len(read_manifest(tmp_path / "o", include_excluded=True).query("split == 'test'")) == 160
