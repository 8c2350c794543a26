"""Leakage and the image-shape floor, on hand-made manifests and the prepared phantoms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vptlib import report
from vptlib.study.leakage import dedup_accuracy, leaked_test_images, shape_floor


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
