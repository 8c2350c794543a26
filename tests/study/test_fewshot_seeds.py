"""A method is seed-free only when its data is: on a K-shot subset (drawn by the seed) the
L-BFGS probe runs once per seed; zero-shot, which learns nothing, still runs once."""

from __future__ import annotations

from vptlib import REPO
from vptlib.runs.config import RunConfig
from vptlib.study import profile as profiles
from vptlib.study.sweep import grid


def test_the_probe_is_seeded_on_a_k_shot_subset_and_not_on_the_whole_split():
    assert not RunConfig(method="linear", data=".").varies_with_seed()
    assert RunConfig(method="linear", data=".", train_per_class=4).varies_with_seed()
    assert not RunConfig(method="zero_shot", data=".", epochs=0, train_per_class=4).varies_with_seed()
    assert RunConfig(method="vpt_shallow", data=".").varies_with_seed()


def test_the_fewshot_sweep_runs_the_probe_once_per_seed_at_every_k():
    prof = profiles.load(REPO / "profiles" / "full.yaml")
    points = grid(prof, "fewshot", check=False)
    seeds = prof.sweeps["fewshot"]["seeds"]
    for k in prof.sweeps["fewshot"]["train_per_class"]:
        probe = sorted(p["seed"] for p, _ in points if p["method"] == "linear" and p["train_per_class"] == k)
        assert probe == sorted(seeds), (k, probe)
        zero = [p["seed"] for p, _ in points if p["method"] == "zero_shot" and p["train_per_class"] == k]
        assert zero == seeds[:1]
