"""Checks of what a test accuracy can be trusted for: leakage and the image-shape shortcut.

* :func:`leaked_test_images`: test images with an exact or near duplicate in train or
  validation (from ``duplicates.csv``). Accuracy on them measures memory, not skill,
  so :func:`dedup_accuracy` reports each method on the raw and on the de-duplicated test set.
* :func:`shape_floor`: a classifier that sees only each original image's width, height
  and aspect ratio. In the Kaggle data the classes differ in image shape; whatever
  accuracy this reaches is a floor that any model must beat before it can be said to
  read anatomy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vptlib.runs.metrics import wilson_ci


def leaked_test_images(data_root: str | Path) -> set[str]:
    """Paths of test images that duplicate (exactly or nearly) a train or validation image."""
    path = Path(data_root) / "duplicates.csv"
    d = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()
    leaked: set[str] = set()
    for _, r in d.iterrows():
        if r.a_split == "test" and r.b_split != "test":
            leaked.add(r.a)
        if r.b_split == "test" and r.a_split != "test":
            leaked.add(r.b)
    return leaked


def dedup_accuracy(predictions: dict[str, pd.DataFrame], data_root: str | Path) -> pd.DataFrame:
    """Per method: test accuracy on all test images and on those without a train/val duplicate.

    ``predictions`` maps a method's name to its test rows (``path``, ``true``, ``pred``).
    """
    leaked = leaked_test_images(data_root)
    rows = []
    for name, p in predictions.items():
        ok = (p.true == p.pred).to_numpy()
        clean = ~p.path.isin(leaked).to_numpy()
        rows.append(
            {
                "method": name,
                "test images": len(p),
                "raw acc (%)": 100 * ok.mean(),
                "de-duplicated images": int(clean.sum()),
                "de-duplicated acc (%)": 100 * ok[clean].mean() if clean.any() else np.nan,
            }
        )
    return pd.DataFrame(rows).round(2)


def shape_floor(manifest: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Test accuracy of gradient-boosted trees on (width, height, aspect ratio) alone.

    Trained on the train and validation images, scored on the test images, with a 95%
    Wilson interval; the majority-class rate is returned beside it.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    df = manifest[manifest.split.isin(["train", "val", "test"]) & (manifest.excluded == "")]
    x = np.stack([df.width.astype(float), df.height.astype(float), df.width.astype(float) / df.height.astype(float)], 1)
    y = df["class"].to_numpy()
    train = (df.split != "test").to_numpy()
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
