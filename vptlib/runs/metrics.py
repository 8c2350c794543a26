"""Classification metrics, calibration, intervals and the paired comparison of two methods.

scikit-learn does the standard metrics; the rest is short enough to read here.
:func:`wilson_ci` equals scipy's ``binomtest(k, n).proportion_ci(method="wilson")`` on
whole counts and also takes a seed mean (a fractional count, which binomtest refuses);
:func:`holm` equals statsmodels' ``multipletests(p, method="holm")``, which the runtime
then need not install. Both are checked against them in ``tests/runs/test_stats.py``.
With 320 test images one image is 0.31 points and the 95% interval around 90% is
about +-3.3 points, so every accuracy is reported with a Wilson interval
(:func:`wilson_ci`), and method comparisons are paired on the same test images, with a
test whose unit includes the seed (:func:`paired_difference`), Holm-corrected (:func:`holm`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from sklearn.metrics import precision_recall_fscore_support as prfs


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al. 2017)."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Per-bin mean confidence, accuracy and count, for a reliability diagram."""
    conf, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": []}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        out["confidence"].append(float(conf[m].mean()) if m.any() else float("nan"))
        out["accuracy"].append(float(correct[m].mean()) if m.any() else float("nan"))
        out["count"].append(int(m.sum()))
    return out


def wilson_ci(correct: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy ``correct`` (a proportion) over ``n`` test images.

    It keeps its coverage near 0% and 100% accuracy, where the percentile bootstrap of a
    0/1 vector collapses (it covers about 84% at 99% accuracy on 320 images).
    """
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = float(correct)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _seed_variance(x: np.ndarray) -> tuple[float, int]:
    """The variance of one method's seed-mean accuracy over its seeds, and its df.

    ``x`` is ``(seeds, images)`` 0/1: the spread of the per-seed accuracies over the seeds
    (Welch's term). It also holds the seed x image interaction, which the image part of
    :func:`paired_difference` counts too: the test errs on the safe side by that much
    (the null simulations of ``tests/runs/test_stats.py`` check that it stays at 5%).
    One seed (a method that trains nothing): no seed part.
    """
    s = x.shape[0]
    if s < 2:
        return 0.0, 0
    return float(x.mean(1).var(ddof=1)) / s, s - 1


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean accuracy of a minus b over their seeds, on the same test images, with a test
    whose unit includes the seed.

    ``correct_a`` is ``(seeds_a, images)`` 0/1, ``correct_b`` ``(seeds_b, images)``. The
    difference is that of the seed-mean accuracies, the quantity the results table
    reports. Its variance has three parts: the images (the variance over the images of
    the paired per-image difference of seed means) and each method's seeds
    (:func:`_seed_variance`). With three seeds the seed parts
    have 2 degrees of freedom each, so the interval and the two-sided p-value use
    Student's t with Welch-Satterthwaite degrees of freedom: a bootstrap over three seeds
    underestimates their spread (an audit of the study's earlier bootstrap found too many
    false positives once seeds vary); ``tests/runs/test_stats.py`` checks that equal
    methods are called different at most 5% of the time, with and without seed variance.
    """
    from scipy.stats import t as student

    a, b = np.atleast_2d(np.asarray(correct_a, np.float64)), np.atleast_2d(np.asarray(correct_b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError("a paired comparison needs predictions on the same test images")
    n = a.shape[1]
    diff = float(a.mean() - b.mean())
    per_image = a.mean(0) - b.mean(0)
    image_var = float(per_image.var(ddof=1)) / n if n > 1 else 0.0
    parts = [(image_var, n - 1), _seed_variance(a), _seed_variance(b)]
    var = sum(v for v, _ in parts)
    if var == 0.0:  # the same predictions, or a constant difference on every image of every seed
        return {"diff": diff, "ci_low": diff, "ci_high": diff, "p_value": 1.0 if diff == 0 else 0.0, "df": math.inf}
    df = var**2 / sum(v**2 / k for v, k in parts if v > 0 and k > 0)
    se = math.sqrt(var)
    half = float(student.ppf(0.5 + level / 2, df)) * se
    return {
        "diff": diff,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "p_value": float(2 * student.sf(abs(diff) / se, df)),
        "df": float(df),
    }


def format_p(p: float) -> str:
    """A p-value as the table shows it: four decimals, and never a bare 0."""
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values: the family-wise error stays at the level used."""
    p = np.asarray(p_values, np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def classification_report(labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Everything ``metrics.json`` holds about predictions on one split."""
    labels = np.asarray(labels)
    pred = probs.argmax(1)
    k = list(range(len(classes)))
    p, r, f, s = prfs(labels, pred, labels=k, zero_division=0)
    lo, hi = wilson_ci(float((pred == labels).mean()), len(labels))
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, pred)),
        "accuracy_ci95": [lo, hi],
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, labels=k, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(labels, pred, labels=k).tolist(),
        "ece": expected_calibration_error(probs, labels),
    }
