"""Floors: what a classifier reaches on test from what is not anatomy.

* :func:`shape_floor`: each original image's width, height and aspect ratio. In the Kaggle
  data the classes differ in image shape.
* :func:`low_level_floors`: each file's size, bytes per pixel and JPEG quantisation, then
  also the image's grey-level histogram. The Kaggle "no tumor" images come from another source
  dataset than the tumour classes, so they may differ in compression and intensity alone.

Each floor is gradient-boosted trees trained on the train and validation images and scored
on test, with a 95% Wilson interval and the majority-class rate beside it. A model that
does not clearly beat a floor may be reading the shortcut rather than the anatomy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vptlib.runs.metrics import wilson_ci

HISTOGRAM_BINS = 16  # grey levels of the low-level floor's intensity histogram
# What the low-level floors see, as the Dataset page states it: the file alone, then the file
# with the grey levels. A histogram carries some anatomy too (a tumour adds bright pixels),
# so the second floor bounds from above what the intensity shortcut alone explains.
FILE_FEATURES = ("file size", "bytes per pixel", "mean JPEG quantisation step (0 for other formats)")
INTENSITY_FEATURES = (f"a {HISTOGRAM_BINS}-bin grey-level histogram", "mean and standard deviation of the grey levels")


def _usable(manifest: pd.DataFrame) -> pd.DataFrame:
    keep = manifest.split.isin(["train", "val", "test"])
    if "excluded" in manifest:
        keep &= manifest.excluded == ""
    return manifest[keep].reset_index(drop=True)


def _floor(x: np.ndarray, y: np.ndarray, train: np.ndarray, seed: int) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(max_depth=3, random_state=seed).fit(x[train], y[train])
    correct = clf.predict(x[~train]) == y[~train]
    lo, hi = wilson_ci(float(correct.mean()), len(correct))
    majority = pd.Series(y[train]).value_counts().index[0]
    return {
        "accuracy": float(correct.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "majority_rate": float((y[~train] == majority).mean()),
        "test_images": int((~train).sum()),
    }


def shape_floor(manifest: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Test accuracy of gradient-boosted trees on (width, height, aspect ratio) alone."""
    df = _usable(manifest)
    w, h = df.width.astype(float).to_numpy(), df.height.astype(float).to_numpy()
    return _floor(np.stack([w, h, w / h], 1), df["class"].to_numpy(), (df.split != "test").to_numpy(), seed)


def low_level_features(path: Path) -> np.ndarray:
    """One image's :data:`FILE_FEATURES` then :data:`INTENSITY_FEATURES`, from its file and grey levels."""
    from PIL import Image

    size = path.stat().st_size
    with Image.open(path) as img:
        tables = getattr(img, "quantization", None) or {}
        quant = float(np.mean([np.mean(t) for t in tables.values()])) if tables else 0.0
        grey = np.asarray(img.convert("L"), dtype=np.float32)
    hist = np.histogram(grey, bins=HISTOGRAM_BINS, range=(0, 256))[0] / grey.size
    return np.concatenate([[size, size / grey.size, quant], hist, [grey.mean(), grey.std()]])


def low_level_floors(data_root: str | Path, manifest: pd.DataFrame, seed: int = 0) -> dict[str, dict[str, float]]:
    """Test accuracy of gradient-boosted trees on :data:`FILE_FEATURES` alone ("file"), and on
    them with :data:`INTENSITY_FEATURES` ("file + intensity")."""
    df = _usable(manifest)
    x = np.stack([low_level_features(Path(data_root) / p) for p in df.path])
    y, train = df["class"].to_numpy(), (df.split != "test").to_numpy()
    return {
        "file": _floor(x[:, : len(FILE_FEATURES)], y, train, seed),
        "file + intensity": _floor(x, y, train, seed),
    }
