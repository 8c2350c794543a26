"""Planted exact and near duplicates: by default never chosen twice (replaced, and listed); kept and
reported with ``keep_duplicates``, optionally excluded from test."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vptlib.data import dedup
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


def _brute_force(sha, dh, ph, thumbs, mirrors):
    """The rules pair by pair, as the module docstring states them."""

    def near(a, b):  # (distance, hit) of hashes a against b
        d = max(bin(a[0] ^ b[0]).count("1"), bin(a[1] ^ b[1]).count("1"))
        return d, d <= dedup.NEAR_MAX_DISTANCE and float(a[2] @ b[2]) >= dedup.NEAR_MIN_CORR

    rows = [(dh[i], ph[i], thumbs[i]) for i in range(len(sha))]
    flips = [(m.dhash, m.phash, m.thumb) for m in mirrors]
    out = []
    for i in range(len(sha)):
        for j in range(i + 1, len(sha)):
            d, hit = near(rows[i], rows[j])
            (d1, h1), (d2, h2) = near(rows[i], flips[j]), near(flips[i], rows[j])
            if sha[i] == sha[j]:
                out.append(dedup.DuplicatePair(i, j, "exact", 0))
            elif hit:
                out.append(dedup.DuplicatePair(i, j, "near", d))
            elif h1 or h2:
                out.append(dedup.DuplicatePair(i, j, "mirror", min(d1, d2)))
    return out


@pytest.mark.parametrize("block", [1024, 7])
def test_the_blocked_search_finds_every_pair_the_rules_name(monkeypatch, block):
    """Hashes drawn so that exact, near, mirrored and distinct pairs all occur, across the
    search's row blocks too; the index the draw uses agrees with the pairwise search."""
    rng = np.random.default_rng(0)
    n, base = 40, 12
    flips = lambda x: int(x) ^ int(rng.integers(1, 2**63)) & 0b111  # noqa: E731  (at most 3 bits)
    dh0, ph0 = rng.integers(0, 2**63, base, dtype=np.uint64), rng.integers(0, 2**63, base, dtype=np.uint64)
    t0 = rng.normal(size=(base, 1024)).astype(np.float32)
    src = rng.integers(0, base, n)
    dh = [flips(dh0[k]) for k in src]
    ph = [flips(ph0[k]) for k in src]
    thumbs = t0[src] + rng.normal(scale=rng.choice([0.01, 0.5], n)[:, None], size=(n, 1024)).astype(np.float32)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True)
    sha = [f"s{k}" if i % 5 == 0 else f"u{i}" for i, k in enumerate(src)]
    mirrors = [
        dedup.Hashes(
            int(dh0[(k + 1) % base]), int(ph0[(k + 1) % base]), t0[(k + 1) % base] / np.linalg.norm(t0[(k + 1) % base])
        )
        for k in src
    ]
    monkeypatch.setattr(dedup, "BLOCK", block)
    found = dedup.find_duplicates(sha, dh, ph, thumbs, mirrors=mirrors)
    assert found == _brute_force(sha, dh, ph, thumbs, mirrors)
    assert {p.kind for p in found} == {"exact", "near", "mirror"}
    index, added = dedup.DuplicateIndex(), []
    for i in range(n):  # the draw's question: does image i duplicate one added before it?
        hit = index.find(sha[i], dh[i], ph[i], thumbs[i], mirrors[i])
        assert hit == _index_reference(added, (sha[i], dh[i], ph[i], thumbs[i], mirrors[i]))
        if hit is None:
            index.add(str(i), sha[i], dh[i], ph[i], thumbs[i])
            added.append((str(i), sha[i], dh[i], ph[i], thumbs[i]))
    assert 0 < len(added) < n


def _index_reference(added, query):
    """Exact first; else the nearest near hit (first added on a tie); else the same through the mirror."""
    sha, dh, ph, thumb, mirror = query
    same = [name for name, s, *_ in added if s == sha]
    if same:
        return same[0], "exact", 0
    for kind, (qd, qp, qt) in (("near", (dh, ph, thumb)), ("mirror", (mirror.dhash, mirror.phash, mirror.thumb))):
        hits = []
        for name, _, d, p, t in added:
            dist = max(bin(qd ^ d).count("1"), bin(qp ^ p).count("1"))
            if dist <= dedup.NEAR_MAX_DISTANCE and float(t @ qt) >= dedup.NEAR_MIN_CORR:
                hits.append((dist, name))
        if hits:
            dist, name = min(hits, key=lambda h: h[0])
            return name, kind, dist
    return None
