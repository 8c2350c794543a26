"""Statistics against known answers: calibration, intervals, seed aggregation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vptlib import report
from vptlib.data.dataset import Preprocess
from vptlib.runs.metrics import classification_report, expected_calibration_error


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
    rows = [
        {
            "split": "test",
            "path": f"img{i}.jpg",
            "true": classes[t],
            "pred": classes[q],
            "prob_a": 0.8 if q == 0 else 0.2,
            "prob_b": 0.2 if q == 0 else 0.8,
        }
        for i, (t, q) in enumerate(zip(true, pred, strict=True))
    ]
    pd.DataFrame(rows).to_csv(d / "predictions.csv", index=False)
    # The recorded metrics are the predictions' own: the Results page checks them against each other.
    probs = np.array([[r["prob_a"], r["prob_b"]] for r in rows])
    test = classification_report(np.array(true), probs, tuple(classes))
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "test": test,
                "val": test,
                "train_accuracy": 1.0,
                "trainable_params": 10,
                "total_params": 100,
                "checkpoint_bytes": 10,
                "seconds_per_epoch": 1.0,
                "best_epoch": 1,
            }
        )
    )
    (d / "config.json").write_text(
        json.dumps(
            {
                "method": method,
                "classes": classes,
                "model": "m",
                "preprocess": dataclasses.asdict(Preprocess()),
                "seed": seed,
                "epochs": 1,
                "lr": 0.1,
                "optimizer": "sgd",
                "batch_size": 4,
                "precision": "fp32",
                "method_options": {},
            }
        )
    )
    return d


def test_results_aggregate_seeds_and_vote(tmp_path):
    true = [0, 1] * 10
    good = [
        _fake_run(tmp_path, "linear", f"r{s}", s, true, true[:18] + [1 - t for t in true[18 : 20 - s]] + true[20 - s :])
        for s in range(3)
    ]
    bad = [_fake_run(tmp_path, "vpt_shallow", f"r{s}", s, true, [0] * 20) for s in range(3)]
    for method, runs in (("linear", good), ("vpt_shallow", bad)):
        (tmp_path / "p" / method / "group.json").write_text(
            json.dumps({"runs": [r.name for r in runs], "seeds": list(range(len(runs)))})
        )
    table = report.results_table(tmp_path, "p").set_index("method")
    row = table.loc["Linear probe"]
    accs = np.array([0.9, 0.95, 1.0])
    assert row.seeds == 3 and row["test acc (%)"] == pytest.approx(100 * accs.mean())
    assert float(row["± std"]) == pytest.approx(100 * accs.std(ddof=1), abs=0.01)
    assert row["per seed (%)"] == "90.0, 95.0, 100.0"
    sig = report.significance_table(tmp_path, "p")  # the reference is VPT-shallow, fixed in advance
    assert sig.iloc[0]["reference"] == "VPT-shallow" and sig.iloc[0]["vs"] == "Linear probe"
    assert sig.iloc[0]["difference (points)"] > 0 and sig.iloc[0]["significant (Holm, 5%)"] == "yes"
    assert "Significantly more accurate than it after the Holm correction: Linear probe" in (
        report.significance_sentence(sig)
    )


def _write_group(root: Path, method: str, labels: np.ndarray, correct: np.ndarray) -> None:
    """Fake runs whose test predictions are right exactly where ``correct`` (seeds x images) says."""
    names = []
    for s, row in enumerate(np.atleast_2d(correct)):
        preds = np.where(row, labels, 1 - labels)
        names.append(_fake_run(root, method, f"r{s}", s, labels.tolist(), preds.tolist()).name)
    (root / "p" / method / "group.json").write_text(json.dumps({"runs": names}))


def test_identical_errors_do_not_beat_disjoint_errors(tmp_path):
    """The audit's case: a linear probe at 82.2% on 3 seeds with identical errors against VPT-deep
    at 80.0% per seed with disjoint errors. The old test (McNemar on the seeds' majority vote, 100%
    for VPT-deep) called the linear probe's *lower* vote a significant lead."""
    n = 320
    labels = np.arange(n) % 2
    lin = np.ones(n, bool)
    lin[:57] = False  # 82.2%
    vpt = np.ones((3, n), bool)
    for s in range(3):
        vpt[s, 57 + 64 * s : 57 + 64 * (s + 1)] = False  # 80.0% each, never the same image
    _write_group(tmp_path, "linear", labels, np.tile(lin, (3, 1)))
    _write_group(tmp_path, "vpt_deep", labels, vpt)
    sig = report.significance_table(tmp_path, "p", reference="vpt_deep")
    row = sig.iloc[0]
    assert row["vs"] == "Linear probe" and row["difference (points)"] == pytest.approx(2.19, abs=0.01)
    assert row["significant (Holm, 5%)"] == "no"
    lo, hi = (float(x) for x in row["paired 95% CI"].split(" to "))
    assert lo < 0 < hi  # the interval and the p-value agree


def test_family_wise_error_of_seven_equal_methods_stays_at_5_percent():
    """7 methods of equal accuracy (80%, independent errors, 3 seeds, 320 images), 6 comparisons
    with the reference, Holm-corrected: P(any called significant) <= 5% plus simulation noise
    (500 simulations: standard error about 1 point)."""
    from vptlib.runs.metrics import holm, paired_difference

    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(500):
        groups = rng.random((7, 3, 320)) < 0.8
        p = [paired_difference(groups[k], groups[0])["p_value"] for k in range(1, 7)]
        hits += min(holm(p)) < 0.05
    assert hits / 500 <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 500)


def _equal_methods(rng, seed_sd: float, seeds: int = 3, images: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """Two methods of the same expected accuracy on the same images: shared per-image
    difficulty, a seed effect of ``seed_sd`` (accuracy points / 100) per run, binomial noise."""
    difficulty = rng.beta(4, 1, images)  # mean 0.8, hard and easy images shared by both methods

    def method() -> np.ndarray:
        shift = rng.normal(0, seed_sd, (seeds, 1))
        return rng.random((seeds, images)) < np.clip(difficulty + shift, 0, 1)

    return method(), method()


@pytest.mark.parametrize("seed_sd", [0.0, 0.04, 0.06])
def test_no_difference_is_called_significant_more_than_5_percent_with_seed_variance(seed_sd):
    """The audit's null simulation: 3 seeds each, seed-to-seed spread of 0 to 6 points. A
    bootstrap over the seeds called 9-14% of equal pairs different at 5% (issue 24); this test's unit
    includes the seed, so the rate stays within 5% + 2 standard errors (1000 simulations)."""
    from vptlib.runs.metrics import paired_difference

    rng = np.random.default_rng(7)
    sims = 1000
    hits = 0
    for _ in range(sims):
        a, b = _equal_methods(rng, seed_sd)
        hits += paired_difference(a, b)["p_value"] < 0.05
    assert hits / sims <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / sims), hits


def test_a_real_difference_is_found_and_p_is_never_zero():
    from vptlib.runs.metrics import format_p, paired_difference

    rng = np.random.default_rng(3)
    difficulty = rng.beta(4, 1, 320)
    a = rng.random((3, 320)) < np.clip(difficulty + 0.08, 0, 1)
    b = rng.random((3, 320)) < difficulty
    d = paired_difference(a, b)
    assert d["p_value"] < 0.01 and d["ci_low"] > 0 and d["df"] >= 2
    assert format_p(0.0) == "< 0.0001" and format_p(0.01234) == "0.0123"
    same = paired_difference(a, a)
    assert same["diff"] == 0 and same["p_value"] == 1.0 and same["ci_low"] == -same["ci_high"]


def test_wilson_interval_keeps_coverage_near_99_percent():
    from vptlib.runs.metrics import wilson_ci

    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(2000):
        k = rng.binomial(320, 0.99)
        lo, hi = wilson_ci(k / 320, 320)
        covered += lo <= 0.99 <= hi
    assert covered / 2000 >= 0.93  # the percentile bootstrap covers about 84% here


# ---- the hand-written formulas equal the kept libraries where both apply
def test_wilson_equals_scipy_binomtest_on_every_count():
    # wilson_ci stays: the results table also needs it for a seed mean (a fractional
    # count), which binomtest cannot take; on whole counts the two must agree.
    from scipy.stats import binomtest

    from vptlib.runs.metrics import wilson_ci

    for n in (1, 7, 80, 320):
        for k in range(n + 1):
            ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
            assert wilson_ci(k / n, n) == pytest.approx((ref.low, ref.high), abs=1e-12)
    ref = binomtest(57, 80).proportion_ci(0.9, method="wilson")
    assert wilson_ci(57 / 80, 80, level=0.9) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_holm_equals_statsmodels(monkeypatch):
    import gc

    from statsmodels.stats.multitest import multipletests

    # Its Holm branch imports gc and calls gc.collect() on every call: a full collection of this
    # worker's heap (torch and every earlier test's objects), 0.3 s to 0.7 s a call, 200 calls.
    # The reference's arithmetic does not depend on it.
    monkeypatch.setattr(gc, "collect", lambda *a: 0)

    from vptlib.runs.metrics import holm

    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 12):
        for _ in range(50):
            p = rng.uniform(0, 0.2, m) ** rng.uniform(0.5, 3)
            p[rng.integers(m)] = p[0]  # ties
            assert holm(list(p)) == pytest.approx(multipletests(p, method="holm")[1].tolist(), abs=1e-15)


def test_the_detectable_difference_is_found_at_the_stated_power():
    """The Results page says a difference of its "detectable" size is found at least 80% of the time:
    simulate paired methods (3 seeds, 320 images) whose true difference is that size."""
    import pandas as pd

    from vptlib.report.comparison import DETECTABLE, POWER, detectable
    from vptlib.runs.metrics import paired_difference

    rng = np.random.default_rng(7)
    n, seeds = 320, 3
    q = rng.uniform(0.45, 0.95, size=n)  # each image's chance that the reference gets it right

    def correct(shift: float) -> np.ndarray:
        return (rng.random((seeds, n)) < np.clip(q + shift, 0, 1)).astype(float)

    # The design's detectable difference, from typical rows (one row's interval is itself noisy:
    # with 3 seeds its seed part has few degrees of freedom).
    nulls = [paired_difference(correct(0.0), correct(0.0)) for _ in range(60)]
    rows = [
        pd.DataFrame({"paired 95% CI": [f"{100 * d['ci_low']:.4f} to {100 * d['ci_high']:.4f}"], "df": [d["df"]]})
        for d in nulls
    ]
    mdd = float(np.median([detectable(r)[0] for r in rows])) / 100
    print(mdd)  # one comparison: Holm's level is 5%
    found = np.mean([paired_difference(correct(mdd), correct(0.0))["p_value"] < 0.05 for _ in range(400)])
    # The noncentral t with Welch's few degrees of freedom errs on the safe side: at the stated
    # size, a difference is found at least as often as stated (here about 92%), never much less.
    assert POWER - 0.03 <= found <= 0.97, (mdd, found)
    assert DETECTABLE.startswith("detectable at 80% power")


def test_the_detectable_difference_exists_with_two_seeds():
    """Two seeds give Welch degrees of freedom near 1.5, where the noncentral t is so wide that
    80% power lies far past the critical value: the search must widen, not fail (a smoke build
    on phantoms stopped here)."""
    import pandas as pd
    from scipy.stats import t as student

    from vptlib.report.comparison import detectable

    rows = pd.DataFrame({"paired 95% CI": ["-28.8 to 40.0", "-60.2 to -16.1"] * 8, "df": [1.6, 7.9] * 8})
    found = detectable(rows)
    se = (40.0 + 28.8) / (2 * student.ppf(0.975, 1.6))
    crit = student.ppf(1 - 0.05 / len(rows) / 2, 1.6)
    assert np.isfinite(found[0]) and found[0] > se * crit  # beyond the critical value, as it must be
    assert found[1] < found[0]
