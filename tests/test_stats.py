"""Statistics against known answers: McNemar by hand, bootstrap coverage, seed aggregation."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pandas as pd
import pytest

from vptlib import report
from vptlib.metrics import bootstrap_ci, expected_calibration_error, mcnemar, paired_bootstrap


def _pairs(b: int, c: int, both: int = 10, neither: int = 5):
    """Correctness vectors with b images only A gets right and c only B gets right."""
    a = [1] * both + [1] * b + [0] * c + [0] * neither
    bb = [1] * both + [0] * b + [1] * c + [0] * neither
    return np.array(a, bool), np.array(bb, bool)


def test_mcnemar_exact_matches_hand_computation():
    # Discordant pairs b=9, c=2: two-sided exact binomial p = 2 * P(X <= 2 | n=11, 1/2).
    a, b = _pairs(9, 2)
    expected = 2 * sum(comb(11, k) for k in range(3)) / 2**11  # = 0.0654...
    assert mcnemar(a, b)["p_value"] == pytest.approx(expected)
    assert mcnemar(a, b)["p_value"] == pytest.approx(0.065430, abs=1e-6)
    a, b = _pairs(12, 1)  # 2 * (1 + 13) / 8192
    assert mcnemar(a, b)["p_value"] == pytest.approx(28 / 8192)
    a, b = _pairs(0, 0)  # no discordant pairs: no evidence of a difference
    assert mcnemar(a, b)["p_value"] == pytest.approx(1.0)
    assert mcnemar(*_pairs(3, 7))["p_value"] == pytest.approx(mcnemar(*_pairs(7, 3))["p_value"])


def test_bootstrap_ci_covers_the_true_accuracy_about_95_percent():
    rng = np.random.default_rng(1)
    true_acc, n, trials = 0.8, 320, 200
    hits = 0
    for t in range(trials):
        correct = rng.random(n) < true_acc
        lo, hi = bootstrap_ci(correct, n_boot=1000, seed=t)
        hits += lo <= true_acc <= hi
    # Binomial(200, 0.95) lies in [181, 197] with probability > 0.99.
    assert 181 <= hits <= 197, hits


def test_paired_bootstrap_interval_and_sign():
    a, b = _pairs(30, 5, both=200, neither=85)
    pb = paired_bootstrap(a, b)
    assert pb["diff"] == pytest.approx(25 / 320)
    assert 0 < pb["ci_low"] < pb["diff"] < pb["ci_high"]
    same = paired_bootstrap(a, a)
    assert same["diff"] == 0 and same["ci_low"] == 0 == same["ci_high"]


def test_ece_known_cases():
    labels = np.array([0, 1, 0, 1])
    perfect = np.eye(2)[labels]
    assert expected_calibration_error(perfect, labels) == pytest.approx(0.0)
    # Always 90% confident in class 0, right half the time: ECE = 0.9 - 0.5.
    probs = np.tile([0.9, 0.1], (4, 1))
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def _fake_run(root, method, name, seed, true, pred):
    d = root / "p" / method / name
    d.mkdir(parents=True)
    classes = ["a", "b"]
    rows = [{"split": "test", "path": f"img{i}.jpg", "true": classes[t], "pred": classes[q],
             "prob_a": 0.8 if q == 0 else 0.2, "prob_b": 0.2 if q == 0 else 0.8}
            for i, (t, q) in enumerate(zip(true, pred, strict=True))]  # fmt: skip
    pd.DataFrame(rows).to_csv(d / "predictions.csv", index=False)
    acc = float(np.mean(np.array(true) == np.array(pred)))
    test = {"accuracy": acc, "balanced_accuracy": acc, "macro_f1": acc, "ece": 0.1, "accuracy_ci95": [0, 1]}
    (d / "metrics.json").write_text(json.dumps({
        "test": test, "val": test, "train_accuracy": 1.0, "trainable_params": 10, "total_params": 100,
        "checkpoint_bytes": 10, "seconds_per_epoch": 1.0, "best_epoch": 1}))  # fmt: skip
    (d / "config.json").write_text(json.dumps({"seed": seed, "epochs": 1, "lr": 0.1, "optimizer": "sgd",
                                               "batch_size": 4, "precision": "fp32", "method_options": {}}))  # fmt: skip
    return d


def test_results_aggregate_seeds_and_vote(tmp_path):
    true = [0, 1] * 10
    good = [_fake_run(tmp_path, "linear", f"r{s}", s, true, true[:18] + [1 - t for t in true[18:20 - s]] + true[20 - s:])
            for s in range(3)]  # fmt: skip
    bad = [_fake_run(tmp_path, "vpt_shallow", f"r{s}", s, true, [0] * 20) for s in range(3)]
    for method, runs in (("linear", good), ("vpt_shallow", bad)):
        (tmp_path / "p" / method / "group.json").write_text(json.dumps({"runs": [r.name for r in runs]}))
    table = report.results_table(tmp_path, "p").set_index("method")
    row = table.loc["Linear probe"]
    accs = np.array([0.9, 0.95, 1.0])
    assert row.seeds == 3 and row["test acc (%)"] == pytest.approx(100 * accs.mean())
    assert row["± std"] == pytest.approx(100 * accs.std(ddof=1), abs=0.01)
    assert row["per seed (%)"] == "90.0, 95.0, 100.0"
    # Majority vote: images 18 and 19 are wrong in 2 and 1 of 3 seeds, so the vote gets only 18 wrong.
    assert report.majority_correct(good).sum() == 19
    sig = report.significance_table(tmp_path, "p")
    assert sig.iloc[0]["best"] == "Linear probe" and sig.iloc[0]["significant at 5%"] == "yes"
