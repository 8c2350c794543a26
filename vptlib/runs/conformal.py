"""Split-conformal prediction sets: adaptive prediction sets (APS; Romano, Sesia and Candès
2020), calibrated on images that chose nothing and evaluated on others.

A reader of a medical classifier is better served by "glioma or meningioma, with 90%
coverage" than by a top-1 label whose reliability is unknown. The score of an image and
a class is the probability mass of every class the model ranks at or above that class:

    s(x, y) = sum of p_k(x) over the classes k with p_k(x) >= p_y(x)

``q`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the ``n`` calibration
images' scores at their true class, and an evaluation image's set is every class whose score
is at most ``q``. When calibration and evaluation images are exchangeable, the set holds the
true class with probability at least ``1 - alpha`` (this is the non-randomised APS: its
coverage may exceed ``1 - alpha``, and a set may be empty when the top class alone
exceeds ``q``). With too few calibration images for the level (``n < 1/alpha - 1``),
``q`` is infinite and every set holds every class.

**Which images calibrate.** Validation images are not exchangeable with test images once they
have chosen something: the epoch, C, WiSE-FT's alpha, Tip-Adapter-F's alpha and beta and the
grid point are each the best of several candidates *on those images*, so their scores look
better there than on new images, and sets calibrated on them cover less than promised (a
simulation in ``tests/runs/test_conformal.py``). The test images chose nothing, so
:func:`report` calibrates on a random half of them and scores the sets on the other half,
and averages coverage and size over :data:`REPEATS` random halvings (seeded): every halving
keeps the guarantee, and the average spends all the test images without reusing one image
for both roles within a halving.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.1  # miscoverage: sets hold the true class for at least 90% of images
REPEATS = 100  # random calibration/evaluation halvings of the test split, averaged
SEED = 0


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


def calibrated(
    cal_probs: np.ndarray, cal_labels: np.ndarray, probs: np.ndarray, labels: np.ndarray, alpha: float = ALPHA
) -> tuple[float, float, float]:
    """(coverage, mean set size, share of empty sets) on ``probs`` of sets calibrated on ``cal_*``."""
    sets = prediction_sets(probs, threshold(cal_probs, cal_labels, alpha))
    if not len(labels):
        return math.nan, math.nan, math.nan
    return (
        float(sets[np.arange(len(labels)), labels].mean()),
        float(sets.sum(1).mean()),
        float((sets.sum(1) == 0).mean()),
    )


def report(test_probs: np.ndarray, test_labels: np.ndarray, alpha: float = ALPHA, repeats: int = REPEATS) -> dict:
    """Coverage and mean set size of sets calibrated on one half of the test images and
    scored on the other, averaged over ``repeats`` seeded halvings (see the module's note)."""
    test_probs, test_labels = np.asarray(test_probs), np.asarray(test_labels)
    n = len(test_labels)
    rng = np.random.default_rng(SEED)
    results = []
    for _ in range(repeats if n >= 2 else 0):
        order = rng.permutation(n)
        cal, held = order[: n // 2], order[n // 2 :]
        results.append(calibrated(test_probs[cal], test_labels[cal], test_probs[held], test_labels[held], alpha))
    coverage, size, empty = np.mean(results, axis=0) if results else (math.nan,) * 3
    return {
        "method": f"APS (split conformal): calibrated on a random half of the test images, which chose nothing, "
        f"scored on the other half; the mean of {repeats} seeded halvings",
        "alpha": alpha,
        "calibration_images": n // 2,
        "repeats": repeats,
        "coverage": float(coverage),
        "mean_set_size": float(size),
        "empty_set_share": float(empty),
    }
