"""Every setting a profile writes for a method reaches that method's runs: the main study, every
variant (backbones, protocols), every grid point and every sweep point. The profile-wide
fields (``batch_size``...) are only defaults beneath the method's own settings."""

from __future__ import annotations

import dataclasses
import math

import pytest

from vptlib import REPO
from vptlib.study import profile as profiles
from vptlib.study.sweep import FIELD_AXES, grid
from vptlib.study.tuning import fields, grid_points
from vptlib.study.variants import variants

PROFILES = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))


def _value(cfg, key):
    names = {f.name for f in dataclasses.fields(cfg)}
    return getattr(cfg, key) if key in names else cfg.options[key]


def _same(got, want) -> bool:
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(float(got), float(want), rel_tol=1e-12)
    return got == want


def _studies(name: str):
    main = profiles.load(REPO / "profiles" / f"{name}.yaml")
    return [("main", main)] + [(v.label, v.profile) for v in variants(main)]


@pytest.mark.parametrize("name", PROFILES)
def test_each_written_setting_arrives_in_every_study_and_grid_point(name):
    checked = 0
    for label, prof in _studies(name):
        for method, written in prof.hparams.items():
            cfg = prof.run_config(method)
            for key, want in written.items():
                assert _same(_value(cfg, key), want), f"{name} {label} {method}.{key}: {_value(cfg, key)} != {want}"
                checked += 1
            for point in grid_points(prof, method):
                at = prof.run_config(method, **fields(point, cfg.batch_size), seed=prof.grid_seed)
                for key, want in {**written, **fields(point, cfg.batch_size)}.items():
                    if key in fields(point, cfg.batch_size) or key not in point:
                        want = fields(point, cfg.batch_size).get(key, want)
                        assert _same(_value(at, key), want), f"{name} {label} {method} grid {point}: {key}"
    assert checked


@pytest.mark.parametrize("name", PROFILES)
def test_each_written_setting_arrives_at_every_sweep_point(name):
    prof = profiles.load(REPO / "profiles" / f"{name}.yaml")
    for sweep in prof.sweeps:
        for point, cfg in grid(prof, sweep, check=False):
            method = point["method"]
            for key, want in prof.hparams.get(method, {}).items():
                if key in point or key in FIELD_AXES and key in point:
                    continue
                assert _same(_value(cfg, key), want), f"{name} sweep {sweep} {point}: {key}"
            for key in set(point) - {"method", "seed"}:
                assert _same(_value(cfg, key), point[key])


def test_a_method_batch_size_beats_the_profile_wide_one():
    """The audit's case: CLAP and Tip-Adapter-F write batch_size 256 beside the profile's 32."""
    prof = profiles.load(REPO / "profiles" / "full.yaml")
    assert prof.batch_size == 32
    assert prof.run_config("clap").batch_size == prof.run_config("tip_adapter_f").batch_size == 256
    assert prof.run_config("vpt_shallow").batch_size == 32
    assert prof.run_config("clap", batch_size=8).batch_size == 8  # an override still wins


@pytest.mark.parametrize("name", ["full", "kaggle-full"])
def test_every_tuned_method_gets_a_grid_of_the_references_size_on_its_own_scale(name):
    """Issue 42, item 5: the reference (VPT) is tuned over KMnP/vpt's 40 points; every other
    method whose paper tunes gets as many, around its own starting lr, so a comparison with the
    reference does not confound the method with its tuning effort. Methods whose papers fix
    their recipe, and those with nothing to tune, get none."""
    from vptlib.methods import METHODS

    profile = profiles.load(REPO / "profiles" / f"{name}.yaml")
    size = len(grid_points(profile, profile.reference))
    assert size == 40
    for method in profile.hparams:
        points = grid_points(profile, method)
        # No trained grid: a fixed recipe, zero-shot, and the L-BFGS probe (its C is its own
        # search on validation, like WiSE-FT's alpha and Tip-Adapter-F's alpha and beta).
        if METHODS[method].fixed_recipe or not METHODS[method].uses_seed():
            assert points == [], method
            continue
        assert len(points) == size, (method, len(points))
        lrs = sorted({p.get("lr", p.get("base_lr")) for p in points})
        start = profile.run_config(method).lr
        if "lr" in points[0]:
            assert lrs[0] < start < lrs[-1] and lrs[-1] / lrs[0] >= 1000, (method, lrs, start)
