"""Split-conformal APS sets: the score, the quantile, the coverage guarantee, and the record."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import tiny_config

from vptlib.runs import conformal, record_writer
from vptlib.runs.engine import run


def test_the_score_is_the_mass_ranked_at_or_above_the_class():
    probs = np.array([[0.5, 0.2, 0.3, 0.0], [0.1, 0.6, 0.25, 0.05]])
    np.testing.assert_allclose(conformal.scores(probs), [[0.5, 1.0, 0.8, 1.0], [0.95, 0.6, 0.85, 1.0]])
    sets = conformal.prediction_sets(probs, 0.8)
    assert sets.tolist() == [[True, False, True, False], [False, True, False, False]]


def test_the_threshold_is_the_finite_sample_quantile():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=19)
    labels = rng.integers(0, 4, size=19)
    true = np.sort(conformal.scores(probs)[np.arange(19), labels])
    assert conformal.threshold(probs, labels, alpha=0.1) == true[17]  # ceil(20 * 0.9) = 18th smallest
    assert conformal.threshold(probs[:8], labels[:8], alpha=0.1) == math.inf  # 8 < 1/alpha - 1
    assert conformal.prediction_sets(probs, math.inf).all()


def test_sets_cover_at_the_promised_rate_on_exchangeable_data():
    """Over many random calibration/test splits of one exchangeable pool, the mean coverage is
    at least 1 - alpha and at most 1 - alpha + 1/(n + 1) (no ties among continuous scores)."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in probs])  # a calibrated model: labels drawn from it
    n, alpha, coverages = 99, 0.1, []
    for _ in range(300):
        idx = rng.permutation(len(labels))
        cal, test = idx[:n], idx[n : n + 200]
        out = conformal.report(probs[cal], labels[cal], probs[test], labels[test], alpha)
        coverages.append(out["coverage"])
    assert 1 - alpha - 0.01 <= np.mean(coverages) <= 1 - alpha + 1 / (n + 1) + 0.01
    assert 1 < out["mean_set_size"] < 4


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_a_lower_alpha_never_gives_smaller_sets(alpha):
    rng = np.random.default_rng(2)
    probs, labels = rng.dirichlet(np.ones(4), size=60), rng.integers(0, 4, size=60)
    loose = conformal.prediction_sets(probs, conformal.threshold(probs, labels, alpha))
    tight = conformal.prediction_sets(probs, conformal.threshold(probs, labels, alpha / 2))
    assert (tight >= loose).all()


def test_every_run_records_its_sets_and_a_later_test_evaluation_agrees(prepared, tiny_model, tmp_path):
    res = run(tiny_config(prepared, tiny_model, tmp_path, method="linear"), progress=False)
    sets = res.metrics["test"]["conformal"]
    assert sets["alpha"] == conformal.ALPHA and sets["calibration_images"] == len(res.metrics["val"]["per_class"]) * 6
    assert 0 <= sets["coverage"] <= 1 and 0 <= sets["mean_set_size"] <= 4
    grid_point = run(
        tiny_config(prepared, tiny_model, tmp_path / "g", method="linear", evaluate_test=False), progress=False
    )
    assert grid_point.metrics["test"] is None
    completed = record_writer.add_test(grid_point.run_dir, grid_point_config(grid_point))
    assert completed["test"]["conformal"] == sets  # from the recorded validation probabilities


def grid_point_config(res):
    import json

    from vptlib.runs.config import RunConfig

    cfg = json.loads((res.run_dir / "config.json").read_text())
    return RunConfig(method=cfg["method"], data=cfg["data"], model=cfg["model"])
