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


def _calibrated_model(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    logits = rng.normal(size=(n, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = (rng.random((n, 1)) > probs.cumsum(1)).sum(1)  # drawn from the model: it is calibrated
    return probs, labels


def test_sets_cover_at_the_promised_rate_on_exchangeable_data():
    """Over many random calibration/test splits of one exchangeable pool, the mean coverage is
    at least 1 - alpha and at most 1 - alpha + 1/(n + 1) (no ties among continuous scores)."""
    rng = np.random.default_rng(1)
    probs, labels = _calibrated_model(rng, 2000)
    n, alpha, coverages = 99, 0.1, []
    for _ in range(300):
        idx = rng.permutation(len(labels))
        cal, test = idx[:n], idx[n : n + 200]
        coverage, size, _ = conformal.calibrated(probs[cal], labels[cal], probs[test], labels[test], alpha)
        coverages.append(coverage)
    assert 1 - alpha - 0.01 <= np.mean(coverages) <= 1 - alpha + 1 / (n + 1) + 0.01
    assert 1 < size < 4


def test_sets_calibrated_on_images_that_chose_nothing_keep_their_coverage():
    """The study's case, simulated: 40 candidates (epochs, grid points) differ by noise; the best
    on 96 validation images is kept. Sets calibrated on those same images under-cover on new
    images; the recorded sets (calibrated on halves of the test split, which chose nothing) do not."""
    rng = np.random.default_rng(3)
    alpha, n_val, n_test, n_new = conformal.ALPHA, 96, 320, 1000
    reused, recorded, truth = [], [], []
    for _ in range(200):
        probs, labels = _calibrated_model(rng, n_val + n_test + n_new)
        # Each candidate is the model with its own noise on every image's logits.
        noise = rng.normal(scale=0.8, size=(40, *probs.shape))
        cands = np.exp(np.log(probs)[None] + noise)
        cands /= cands.sum(-1, keepdims=True)
        val, test, new = np.split(np.arange(len(labels)), [n_val, n_val + n_test])
        # Kept: the candidate that looks best on validation, here by the statistic the sets rest on
        # (its validation 90% score quantile: the smallest sets); selection on accuracy or loss
        # biases it the same way, less strongly.
        fit = [np.quantile(conformal.scores(c[val])[np.arange(n_val), labels[val]], 1 - alpha) for c in cands]
        best = cands[int(np.argmin(fit))]
        reused.append(conformal.calibrated(best[val], labels[val], best[new], labels[new], alpha)[0])
        recorded.append(conformal.report(best[test], labels[test], alpha, repeats=20)["coverage"])
        truth.append(conformal.calibrated(best[test], labels[test], best[new], labels[new], alpha)[0])
    assert np.mean(reused) < min(np.mean(truth), 1 - alpha) - 0.02  # the defect: calibrated where it chose
    assert np.mean(truth) >= 1 - alpha - 0.005  # calibrated on test: covers new images as promised
    assert np.mean(recorded) >= 1 - alpha - 0.005  # and the recorded estimate says so


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_a_lower_alpha_never_gives_smaller_sets(alpha):
    rng = np.random.default_rng(2)
    probs, labels = rng.dirichlet(np.ones(4), size=60), rng.integers(0, 4, size=60)
    loose = conformal.prediction_sets(probs, conformal.threshold(probs, labels, alpha))
    tight = conformal.prediction_sets(probs, conformal.threshold(probs, labels, alpha / 2))
    assert (tight >= loose).all()


def test_every_run_records_its_sets_and_a_later_test_evaluation_agrees(prepared, tiny_model, tmp_path):
    # select="last": the probe fitted once at its fixed C, not over CLIP's 96-point sweep (the
    # sets are made from whatever probabilities the run has).
    res = run(tiny_config(prepared, tiny_model, tmp_path, method="linear", select="last"), progress=False)
    sets = res.metrics["test"]["conformal"]
    n_test = sum(c["support"] for c in res.metrics["test"]["per_class"].values())
    assert sets["alpha"] == conformal.ALPHA and sets["calibration_images"] == n_test // 2
    assert 0 <= sets["coverage"] <= 1 and 0 <= sets["mean_set_size"] <= 4
    grid_point = run(
        tiny_config(prepared, tiny_model, tmp_path / "g", method="linear", select="last", evaluate_test=False),
        progress=False,
    )
    assert grid_point.metrics["test"] is None
    completed = record_writer.add_test(grid_point.run_dir, grid_point_config(grid_point))
    assert completed["test"]["conformal"] == sets  # the same halvings of the same test probabilities


def grid_point_config(res):
    import json

    from vptlib.runs.config import RunConfig

    cfg = json.loads((res.run_dir / "config.json").read_text())
    return RunConfig(method=cfg["method"], data=cfg["data"], model=cfg["model"])
