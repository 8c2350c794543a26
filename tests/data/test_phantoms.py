"""Phantoms are deterministic, differ by class, and are learnable but not trivial."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vptlib.data.classes import CLASSES
from vptlib.data.phantoms import phantom, write_phantoms


def test_deterministic_for_a_seed(tmp_path):
    a = write_phantoms(tmp_path / "a", per_class=2, size=64, seed=3)
    b = write_phantoms(tmp_path / "b", per_class=2, size=64, seed=3)
    c = write_phantoms(tmp_path / "c", per_class=2, size=64, seed=4)
    rel = "Training/glioma/Tr-gl_0001.jpg"
    assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / rel).read_bytes() != (c / rel).read_bytes()
    assert sorted(p.name for p in (a / "Testing").iterdir()) == sorted(CLASSES)


def _features(img: np.ndarray) -> np.ndarray:
    """Crude hand-made features: a central intensity histogram and a 4x4 grid of means and stds."""
    x = img.astype(np.float64) / 255
    hist = np.histogram(x[20:108, 20:108], bins=16, range=(0, 1))[0] / 88**2
    blocks = x.reshape(4, 32, 4, 32)
    return np.concatenate([hist, blocks.mean((1, 3)).ravel(), blocks.std((1, 3)).ravel()])


def test_classes_are_learnable_but_not_trivial():
    X, y = [], []
    for c, label in enumerate(CLASSES):
        for i in range(40):
            X.append(_features(phantom(label, np.random.default_rng([0, c, i]), 128)))
            y.append(c)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    acc = cross_val_score(model, np.array(X), np.array(y), cv=4).mean()
    assert acc > 0.40, f"phantom classes not separable by simple features: {acc:.2f}"
    assert acc < 0.99, f"phantom classes trivially separable by coarse features: {acc:.2f}"


def test_anatomy_present_in_every_class():
    for label in CLASSES:
        img = phantom(label, np.random.default_rng(1), 128).astype(float)
        centre, corner = img[54:74, 54:74].mean(), img[:10, :10].mean()
        assert centre > corner + 30, label  # brain tissue inside, air outside
        assert img.max() > 180, label  # bright skull ring
