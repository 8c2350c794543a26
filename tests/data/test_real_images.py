"""The data pipeline on real brain MRI: ``../shared/data/kaggle-brain-mri-224`` (the Kaggle
images, resized to 224 px). Every count asserted here is checked against an independent
computation written out in this file (64x64 grey thumbnails, bicubic, mean-centred, cosine,
each image also mirrored), never against vptlib's own detector.

A subset keeps ``make test`` fast: 60 Testing images a class, every Training image whose
independent match with one of them is 0.9 or more (so the real leakage is in it), and 60
more Training images a class. Absent the images, the tests skip with one line, and fail
under CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import real_subset, thumbs

from vptlib import REPO
from vptlib.data.prepare import PrepareOptions, prepare

PER_CLASS = 60


def _best_match(queries: list[Path], pool: list[Path]) -> np.ndarray:
    """Each query's highest cosine with a pool image, as it is or mirrored."""
    q, _ = thumbs(queries)
    p, pm = thumbs(pool)
    return np.maximum(q @ p.T, q @ pm.T).max(1)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    return real_subset(tmp_path_factory.mktemp("real") / "src", PER_CLASS)


def _leaks(out: Path) -> tuple[np.ndarray, pd.Series]:
    """Each test image's best independent match in train + val, and the test split's classes."""
    m = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    m = m[m.split.isin(["train", "val", "test"])]
    test, rest = m[m.split == "test"], m[m.split != "test"]
    return _best_match([out / p for p in test.path], [out / p for p in rest.path]), test["class"]


def test_the_subset_has_the_real_leakage(real):
    """Most of the subset's Testing images have a copy in its Training folder (independent measure)."""
    tests = sorted((real / "Testing").rglob("*.jpg"))
    best = _best_match(tests, sorted((real / "Training").rglob("*.jpg")))
    assert (best >= 0.95).mean() > 0.5


@pytest.mark.parametrize(
    "counts", [{"train_per_class": 40, "test_per_class": 25}, {"train_per_class": "all", "test_per_class": "all"}]
)
def test_prepare_leaves_no_test_image_with_a_copy_in_train_or_val(real, tmp_path, counts):
    out = tmp_path / "o"
    prepare(PrepareOptions(real, out, link=True, **counts))
    best, classes = _leaks(out)
    assert best.max() < 0.95, f"{(best >= 0.95).sum()} test images keep a copy in train/val"
    shares = classes.value_counts(normalize=True)
    assert len(shares) == 4 and shares.min() >= 0.10, shares


def test_the_audit_counts_cross_folder_copies_as_the_independent_measure_does(real, tmp_path):
    from vptlib.study import audit

    report = audit.audit(real)
    out = audit.write(report, tmp_path / "audit")
    tests = sorted((real / "Testing").rglob("*.jpg"))
    independent = int((_best_match(tests, sorted((real / "Training").rglob("*.jpg"))) >= 0.95).sum())
    said = report["cross_split"]["test_images_with_copy"]
    assert abs(said - independent) <= 0.1 * independent, (said, independent)
    q, _ = thumbs(tests)
    t, tm = thumbs(sorted((real / "Training").rglob("*.jpg")))
    pairs_independent = int((np.maximum(q @ t.T, q @ tm.T) >= 0.95).sum())
    pairs_said = report["cross_split"]["pairs"]
    assert abs(pairs_said - pairs_independent) <= 0.1 * pairs_independent, (pairs_said, pairs_independent)
    saved = json.loads((out / "audit.json").read_text())
    assert saved["official_test"] == report["official_test"] and saved["floors"]
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) and set(pairs.kind) <= {"exact", "near", "mirrored", "re-windowed"}
    sims = [_best_match([real / a], [real / b])[0] for a, b in zip(pairs.a, pairs.b, strict=True)]
    assert min(sims) >= 0.9, min(sims)
    assert (out / "closest.png").stat().st_size > 0
    assert "copy in Training" in audit.table(report)


def test_the_floors_run_on_real_images(real, tmp_path):
    """Low-level statistics classify real MRI far above chance (the shortcut the pages must show)."""
    from vptlib.data.manifest import read_manifest
    from vptlib.study.shortcuts import low_level_floors, shape_floor

    out = tmp_path / "o"
    prepare(PrepareOptions(real, out, train_per_class=40, test_per_class=25, link=True))
    floors = low_level_floors(out, read_manifest(out))
    assert floors["file + intensity"]["accuracy"] > floors["file + intensity"]["majority_rate"] + 0.1
    assert 0 <= shape_floor(read_manifest(out))["accuracy"] <= 1


def test_the_dataset_page_renders_real_images(real, tmp_path, pretrained_tiny):
    """The Dataset page, executed as the book does, on real MRI prepared by cluster."""
    import papermill as pm
    import yaml

    data = tmp_path / "data"
    prepare(PrepareOptions(real, data, train_per_class=30, test_per_class=20, link=True))
    profile = tmp_path / "real.yaml"
    profile.write_text(
        yaml.safe_dump({"profile": "real", "model": str(pretrained_tiny), "data": str(data), "device": "cpu"})
    )
    out = tmp_path / "dataset.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "dataset.ipynb"),
        str(out),
        parameters={"profile_path": str(profile)},
        progress_bar=False,
        cwd=str(REPO),
        kernel_name="python3",
    )
    text = out.read_text()
    assert "none has a copy in training or validation" in text and "with a copy in Training" in text
    assert text.count("image/png") >= 4
