"""Split-conformal prediction sets: adaptive prediction sets (APS; Romano, Sesia and Candès
2020), calibrated on the validation split and evaluated on test.

A reader of a medical classifier is better served by "glioma or meningioma, with 90%
coverage" than by a top-1 label whose reliability is unknown. The score of an image and
a class is the probability mass of every class the model ranks at or above that class:

    s(x, y) = sum of p_k(x) over the classes k with p_k(x) >= p_y(x)

``q`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the ``n`` validation
images' scores at their true class, and a test image's set is every class whose score is
at most ``q``. When validation and test images are exchangeable, the set holds the true
class with probability at least ``1 - alpha`` (this is the non-randomised APS: its
coverage may exceed ``1 - alpha``, and a set may be empty when the top class alone
exceeds ``q``). With too few validation images for the level (``n < 1/alpha - 1``),
``q`` is infinite and every set holds every class.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.1  # miscoverage: sets hold the true class for at least 90% of images


def scores(probs: np.ndarray) -> np.ndarray:
    """``(N, C)`` APS scores of every class: the mass of the classes ranked at or above it."""
    probs = np.asarray(probs, dtype=np.float64)  # recorded and in-memory probabilities score alike
    order = np.argsort(-probs, axis=1, kind="stable")  # (N, C) classes, most probable first
    mass = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)  # (N, C) in rank order
    out = np.empty_like(mass)
    np.put_along_axis(out, order, mass, axis=1)  # back to class order
    return out


def threshold(probs: np.ndarray, labels: np.ndarray, alpha: float = ALPHA) -> float:
    """The conformal quantile of the calibration images' true-class scores (inf if too few)."""
    n = len(labels)
    k = math.ceil((n + 1) * (1 - alpha))
    if n == 0 or k > n:
        return math.inf
    true = scores(probs)[np.arange(n), labels]
    return float(np.sort(true)[k - 1])


def prediction_sets(probs: np.ndarray, q: float) -> np.ndarray:
    """``(N, C)`` booleans: class c is in image i's set."""
    return scores(probs) <= q + 1e-12  # the calibration score itself must count as inside


def report(
    val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray, test_labels: np.ndarray, alpha: float = ALPHA
) -> dict:
    """Coverage and mean set size on test of the sets calibrated on validation."""
    q = threshold(val_probs, val_labels, alpha)
    sets = prediction_sets(test_probs, q)
    return {
        "method": "APS (split conformal, calibrated on validation)",
        "alpha": alpha,
        "threshold": q if math.isfinite(q) else None,
        "calibration_images": int(len(val_labels)),
        "coverage": float(sets[np.arange(len(test_labels)), test_labels].mean()) if len(test_labels) else math.nan,
        "mean_set_size": float(sets.sum(1).mean()) if len(test_labels) else math.nan,
        "empty_sets": int((sets.sum(1) == 0).sum()),
    }
