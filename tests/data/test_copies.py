"""Planted copies of every kind (exact, re-encoded, mirrored, re-windowed, shifted) are found
by the one copy rule; the draw keeps every copy cluster on one side of the split, one image
per cluster in validation and test; ``keep_duplicates`` keeps and reports them."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from vptlib.data import copies
from vptlib.data.draw import pooled_test_counts
from vptlib.data.manifest import read_manifest
from vptlib.data.prepare import PrepareOptions, prepare
from vptlib.errors import UserError


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


PLANTS = {
    "exact": lambda img: img,
    "near": lambda img: img.resize((160, 160), Image.Resampling.BICUBIC),  # rescaled and re-encoded
    "mirrored": ImageOps.mirror,
    "re-windowed": lambda img: img.point(lambda v: min(255, int(1.7 * v))),  # another window, clipped
    "shifted": lambda img: img.transform(img.size, Image.Transform.AFFINE, (1, 0, 2, 0, 1, 2)),
}


@pytest.fixture(scope="module")
def planted(phantom_source, tmp_path_factory):
    """The phantoms with one test image of meningioma replaced by each kind of copy of a training image."""
    src = tmp_path_factory.mktemp("copies")
    shutil.copytree(phantom_source, src, dirs_exist_ok=True)
    train = sorted((src / "Training" / "meningioma").glob("*.jpg"))
    victims = sorted((src / "Testing" / "meningioma").glob("*.jpg"))
    plants = {}
    for k, (kind, make) in enumerate(PLANTS.items()):
        if kind == "exact":
            shutil.copyfile(train[k], victims[k])
        else:
            victims[k].write_bytes(_jpeg(make(Image.open(train[k]).convert("RGB"))))
        plants[kind] = (train[k].name, victims[k].name)
    return src, plants


def _signatures(paths):
    shas = [copies.sha256_file(p) for p in paths]
    return shas, [copies.Signature.of(Image.open(p)) for p in paths]


def test_every_planted_kind_is_found_and_nothing_else(planted):
    src, plants = planted
    paths = sorted((src / "Training" / "meningioma").glob("*.jpg")) + sorted(
        (src / "Testing" / "meningioma").glob("*.jpg")
    )
    pairs = copies.find_copies(*_signatures(paths))
    found = {(paths[p.a].name, paths[p.b].name): p.kind for p in pairs}
    assert found == {plant: kind for kind, plant in plants.items()}, found


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    """The rule's cosine written out: mean-centred, unit-norm, dot product."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_the_blocked_search_equals_the_pairwise_rule(monkeypatch):
    """Random thumbnails with planted near, mirrored and equalisation-only matches, across row blocks."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (6, 64, 64)).astype(np.uint8)
    grey = np.concatenate([base, base[:2] // 2 + 40, base[2:4, :, ::-1]])  # 0-1 re-windowed, 2-3 mirrored
    sigs = [copies.Signature(g, np.asarray(ImageOps.equalize(Image.fromarray(g))), g) for g in grey]
    monkeypatch.setattr(copies, "BLOCK", 3)
    pairs = copies.find_copies([f"s{i}" for i in range(len(sigs))], sigs)
    expected = set()
    for i in range(len(sigs)):
        for j in range(i + 1, len(sigs)):
            best = max(_cos(grey[i], grey[j]), _cos(grey[i], grey[j][:, ::-1]))
            eq = max(_cos(sigs[i].equalised, sigs[j].equalised), _cos(sigs[i].equalised, sigs[j].equalised[:, ::-1]))
            if best >= copies.SIMILAR or eq >= copies.EQUALISED:
                expected.add((i, j))
    assert {(p.a, p.b) for p in pairs} == expected == {(0, 6), (1, 7), (2, 8), (3, 9)}
    kinds = {(p.a, p.b): p.kind for p in pairs}
    assert kinds[0, 6] == kinds[1, 7] == "re-windowed" and kinds[2, 8] == kinds[3, 9] == "mirrored"


def test_clusters_are_connected_components():
    pairs = [
        copies.CopyPair(0, 3, "near", 1, ""),
        copies.CopyPair(3, 5, "near", 1, ""),
        copies.CopyPair(1, 2, "", 1, ""),
    ]
    assert copies.clusters(6, pairs).tolist() == [0, 1, 1, 0, 4, 0]


def test_no_test_image_has_a_copy_in_training_by_default(planted, tmp_path):
    """Every planted copy's cluster lies on one side; the counts are met; each skipped copy
    names the chosen image it copies and its kind."""
    src, plants = planted
    out = tmp_path / "o"
    prepare(PrepareOptions(src, out, train_per_class=35, test_per_class=35, val_fraction=0.2, seed=0))
    df = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    used = df[df.split != "skipped"]
    assert used.groupby("split").size().to_dict() == {"test": 140, "train": 112, "val": 28}
    for kind, (orig, copy) in plants.items():
        rows = df[df.source.isin([f"Training/meningioma/{orig}", f"Testing/meningioma/{copy}"])]
        chosen = rows[rows.split != "skipped"]
        assert len(chosen) <= 1, (kind, rows)  # never both: one image per cluster
        if len(chosen) == 1:
            other = rows[rows.split == "skipped"].iloc[0]
            assert other.duplicate_of == chosen.path.iloc[0] and other.duplicate_kind == kind
            assert other.note.startswith(f"{kind} copy (of chosen image images/")
    dups = pd.read_csv(out / "duplicates.csv", dtype=str, keep_default_na=False)
    assert set(dups.b_split) <= {"skipped"}  # no pair among the chosen images


def test_keep_duplicates_reports_pairs_and_drop_excludes_test_copies(planted, tmp_path):
    src, plants = planted
    opts = dict(train_per_class=40, test_per_class=40, val_fraction=0.0, keep_duplicates=True)
    prepare(PrepareOptions(src, tmp_path / "o", drop_test_duplicates=True, **opts))
    dups = pd.read_csv(tmp_path / "o" / "duplicates.csv", dtype=str, keep_default_na=False)
    cross = dups[(dups.a_split == "train") & (dups.b_split == "test")]
    found = {
        (a.rsplit("/", 1)[1], b.rsplit("/", 1)[1]): k for a, b, k in zip(cross.a, cross.b, cross.kind, strict=True)
    }
    assert found == {plant: kind for kind, plant in plants.items()}
    assert len(dups) == len(PLANTS)
    df = pd.read_csv(tmp_path / "o" / "manifest.csv", dtype=str, keep_default_na=False)
    excluded = df[df.excluded != ""]
    assert sorted(excluded.source.str.rsplit("/", n=1).str[1]) == sorted(c for _, c in plants.values())
    assert len(read_manifest(tmp_path / "o").query("split == 'test'")) == 160 - len(PLANTS)


def test_a_split_that_cannot_be_met_without_copies_is_a_clear_error(planted, tmp_path):
    src, _ = planted
    with pytest.raises(UserError, match=r"class 'meningioma' in Testing: only \d+ images that are not copies"):
        prepare(PrepareOptions(src, tmp_path / "o", train_per_class=40, test_per_class=40, val_fraction=0.0))


def test_the_pooled_draw_splits_by_cluster_with_one_image_per_cluster_in_val_and_test(planted, tmp_path):
    src, plants = planted
    out = tmp_path / "o"
    res = prepare(PrepareOptions(src, out, train_per_class="all", test_per_class="all", test_fraction=0.25))
    df = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    used = df[df.split != "skipped"]
    assert len(used) + res.skipped == 320 and used.sha256.is_unique
    for _, (orig, copy) in plants.items():
        pair = df[df.source.isin([f"Training/meningioma/{orig}", f"Testing/meningioma/{copy}"])]
        assert len(set(pair.split) - {"skipped"}) == 1  # one side only
    counts = used[used.split == "test"]["class"].value_counts()
    assert counts.min() >= 0.125 * counts.sum()


def test_a_cluster_filed_under_two_classes_is_skipped_whole(phantom_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    one = sorted((src / "Training" / "glioma").glob("*.jpg"))[0]
    shutil.copyfile(one, src / "Training" / "pituitary" / "same-slice.jpg")
    prepare(PrepareOptions(src, tmp_path / "o", train_per_class=30, test_per_class=30))
    df = pd.read_csv(tmp_path / "o" / "manifest.csv", dtype=str, keep_default_na=False)
    both = df[df.source.isin([f"Training/glioma/{one.name}", "Training/pituitary/same-slice.jpg"])]
    assert (both.split == "skipped").all() and both.note.str.contains("another class").all()


@pytest.mark.parametrize(
    "clusters, expected",
    [
        ({"a": 100, "b": 100, "c": 100, "d": 100}, {"a": 20, "b": 20, "c": 20, "d": 20}),
        # the real set's clusters per class: the smallest class keeps 12.5% of test
        ({"g": 1238, "m": 791, "n": 379, "p": 671}, {"g": 240, "m": 158, "n": 76, "p": 134}),
    ],
)
def test_pooled_test_counts_keep_every_class_at_half_a_balanced_share(clusters, expected):
    got = pooled_test_counts(clusters, 0.2)
    assert got == expected
    assert min(got.values()) >= 0.125 * sum(got.values())


def test_the_readme_real_data_section_is_rendered_from_the_saved_record():
    """The README's numbers on the real images come from benchmarks/results/audit-*.json,
    rendered by `python -m vptlib.bench --render-audit` (never typed)."""
    import json

    from vptlib import REPO
    from vptlib.bench.audit_record import README_MARKERS, readme_markdown
    from vptlib.study.audit import KAGGLE_AUDIT

    record = json.loads(KAGGLE_AUDIT.read_text())
    text = (REPO / "docs" / "guide.md").read_text()
    start, end = README_MARKERS
    assert text.split(start, 1)[1].split(end, 1)[0].strip() == readme_markdown(record).strip()
    official = record["official_test"]
    assert sum(v["test_images"] for v in official.values()) == 1311
