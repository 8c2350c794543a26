"""Planted exact and near duplicates: by default never chosen twice (replaced, and listed); kept and
reported with ``keep_duplicates``, optionally excluded from test."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vptlib.data.manifest import read_manifest
from vptlib.data.prepare import PrepareOptions, prepare


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
    prepare(
        PrepareOptions(
            src,
            out,
            train_per_class=40,
            test_per_class=40,
            val_fraction=0.0,
            keep_duplicates=True,
            drop_test_duplicates=drop,
        )
    )
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


def test_splits_are_duplicate_free_by_default(planted, tmp_path):
    """The planted test copies are skipped and replaced by the next candidates; the requested
    counts are still met; the manifest and duplicates.csv say what was skipped and why."""
    src, train_names, test_names = planted
    out = tmp_path / "o"
    # Every training image (so both originals) and 38 of the 40 test images of each class: the
    # draw must pass both planted copies to reach 38.
    prepare(PrepareOptions(src, out, train_per_class=40, test_per_class=38, val_fraction=0.2, seed=0))
    df = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    used = df[df.split != "skipped"]
    assert used.groupby("split").size().to_dict() == {"test": 152, "train": 128, "val": 32}
    assert used.sha256.is_unique and used.duplicate_of.eq("").all()
    dups = pd.read_csv(out / "duplicates.csv", dtype=str, keep_default_na=False)
    assert set(dups.b_split) <= {"skipped"}  # no pair among the chosen images, in any split
    chosen_train = set(used[used.split.isin(["train", "val"])].source.str.split("/").str[-1])
    for name, copy, kind in zip(train_names, test_names, ("exact", "near"), strict=True):
        assert name in chosen_train
        row = df[df.source == f"Testing/meningioma/{copy}"]
        assert not row.empty and row.split.iloc[0] == "skipped", copy
        assert row.note.iloc[0].startswith(f"{kind} duplicate (of chosen image images/")
        assert row.duplicate_of.iloc[0].endswith(name)
        assert ((dups.b == f"Testing/meningioma/{copy}") & (dups.kind == kind)).sum() == 1


def test_every_candidate_of_a_split_drawn_duplicate_free(planted, tmp_path):
    """Asking for every test image forces the planted copies into the draw: they are skipped,
    and the shortfall is a clear error that names the duplicates."""
    src, _, _ = planted
    from vptlib.errors import UserError

    with pytest.raises(UserError, match=r"only 38 usable images \(0 unreadable, 2 duplicates"):
        prepare(PrepareOptions(src, tmp_path / "o", train_per_class=40, test_per_class=40, val_fraction=0.0))


def test_a_mirrored_copy_is_a_duplicate_once_flipped(phantom_source):
    from PIL import ImageOps

    from vptlib.data.dedup import DuplicateIndex, Hashes, find_duplicates, mirrored

    files = sorted((phantom_source / "Training").rglob("*.jpg"))[:6]
    imgs = [Image.open(f).convert("RGB") for f in files]
    index = DuplicateIndex()
    for i, img in enumerate(imgs):
        h = Hashes.of(img)
        index.add(str(i), f"sha{i}", h.dhash, h.phash, h.thumb)
    flip = ImageOps.mirror(imgs[3])
    h = Hashes.of(flip)
    assert index.find("other", h.dhash, h.phash, h.thumb) is None  # not a near duplicate as it is
    assert index.find("other", h.dhash, h.phash, h.thumb, mirrored(flip))[:2] == ("3", "mirror")
    rows = [*imgs, flip]
    hashes = [Hashes.of(x) for x in rows]
    pairs = find_duplicates(
        [f"sha{i}" for i in range(len(rows))],
        [x.dhash for x in hashes],
        [x.phash for x in hashes],
        np.stack([x.thumb for x in hashes]),
        mirrors=[mirrored(x) for x in rows],
    )
    assert [(p.a, p.b, p.kind) for p in pairs] == [(3, 6, "mirror")]
