"""The sweep runner: grids from profiles, worker pools, reuse, and the failure index."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from helpers import sweep_profile

from vptlib import report
from vptlib.data.manifest import read_manifest
from vptlib.errors import UserError
from vptlib.runs import records
from vptlib.study import book
from vptlib.study.sweep import grid, run_sweep


def _profile(prepared, tiny_model, tmp_path, sweeps) -> dict:
    return sweep_profile(prepared, tiny_model, tmp_path, sweeps)


@pytest.mark.parametrize("name", ["smoke", "full", "kaggle-full"])
def test_profile_sweeps_are_valid_grids(name, prepared):
    prof = dataclasses.replace(book.load_profile(book.REPO / "profiles" / f"{name}.yaml"), data=str(prepared))
    fewshot = grid(prof, "fewshot")
    shots = prof.sweeps["fewshot"]["train_per_class"]
    seeds = prof.sweeps["fewshot"]["seeds"]
    methods = prof.sweeps["fewshot"]["methods"]
    # zero-shot learns nothing: one seed; the L-BFGS probe's K-shot subset is the seed's: every seed
    once = {"zero_shot"} & set(methods)
    assert len(fewshot) == len(shots) * ((len(methods) - len(once)) * len(seeds) + len(once))
    assert {p["seed"] for p, _ in fewshot if p["method"] == "linear"} == set(seeds)
    assert {cfg.profile for _, cfg in fewshot} == {f"{name}-fewshot"}  # never mixed with the main table
    prompts = grid(prof, "prompts")
    assert {cfg.options["prompt_tokens"] for _, cfg in prompts} == {1, 5, 10, 50}
    assert prof.seeds == {"smoke": [0, 1], "full": [0, 1, 2, 3, 4], "kaggle-full": [0, 1, 2]}[name]


def test_grid_errors_name_the_problem(prepared, tiny_model, tmp_path):
    prof = _profile(prepared, tiny_model, tmp_path, {"a": {"methods": ["linear"], "colour": [1]}})
    with pytest.raises(UserError, match="unknown axis colour"):
        grid(prof, "a")
    with pytest.raises(UserError, match="has no sweep 'b'"):
        grid(prof, "b")


@pytest.mark.parametrize("workers", [1, 2])
def test_sweep_runs_reuses_and_records(prepared, tiny_model, tmp_path, workers):
    sweeps = {
        "few": {
            "methods": ["zero_shot", "linear", "vpt_shallow"],
            "train_per_class": [2, 4],
            "seeds": [0, 1],
        }
    }
    prof = _profile(prepared, tiny_model, tmp_path, sweeps)
    df = run_sweep(prof, "few", workers=workers, progress=False)
    assert len(df) == 2 * (1 + 2 + 2) and (df.error.fillna("") == "").all()  # zero-shot: one seed
    assert set(df[df.method == "linear"].train_images) == {8, 16}
    index = pd.read_csv(tmp_path / "s" / "sweeps" / "few.csv", keep_default_na=False, na_values=[""])
    assert list(index.run_dir) == list(df.run_dir)
    again = run_sweep(prof, "few", workers=workers, progress=False)  # every point reused
    assert list(again.run_dir) == list(df.run_dir)
    table = report.sweep_table(df, "train_per_class")
    assert table.shape == (3, 2) and "n=2" in table.loc["Linear probe", 4] and "n=2" in table.loc["VPT-shallow", 4]
    assert "n=1" in table.loc["Zero-shot CLIP", 4]
    ax = report.plot_few_shot(df).axes[0]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
        "Linear probe",
        "VPT-shallow",
        "Zero-shot CLIP",
    ]
    line = next(x for x in ax.get_lines() if x.get_label() == "Linear probe" or len(x.get_xdata()) == 2)
    assert list(line.get_xdata()) == [2, 4]  # one point per training size


def test_failed_point_is_listed_not_dropped(prepared, tiny_model, tmp_path, capsys):
    sweeps = {
        "bad": {
            "methods": ["linear"],
            "lr": [0.01, 1e30],
            "seeds": [0],
        }
    }  # SGD can diverge
    prof = _profile(prepared, tiny_model, tmp_path, sweeps)
    prof["hparams"]["linear"] = {"epochs": 1, "solver": "sgd"}
    df = run_sweep(prof, "bad", workers=1, progress=False)
    assert len(df) == 2
    assert df.error.fillna("").str.contains("TrainingDiverged|loss").sum() == 1
    assert "1 of 2 points failed" in capsys.readouterr().out


def test_prompt_length_plot(prepared, tiny_model, tmp_path):
    sweeps = {"p": {"methods": ["vpt_shallow"], "prompt_tokens": [1, 3], "seeds": [0]}}
    df = run_sweep(_profile(prepared, tiny_model, tmp_path, sweeps), "p", workers=1, progress=False)
    assert list(df.trainable_params) == [1 * 64 + 260, 3 * 64 + 260]
    ax = report.plot_prompt_length(pd.DataFrame(df)).axes[0]
    line = next(x for x in ax.get_lines() if len(x.get_xdata()) == 2)
    assert list(line.get_xdata()) == [1 * 64 + 260, 3 * 64 + 260]  # at its trainable parameters
    assert sorted(t.get_text() for t in ax.texts) == ["P=1", "P=3"]  # each point labelled with its length


def test_points_run_the_tuned_setting_with_the_full_runs_step_budget(prepared, pretrained_tiny, tmp_path):
    """A sweep point is its method's main-table configuration (the grid's choice on validation),
    not the profile's starting hparams, and every K trains as many steps as the main run."""
    sweeps = {"few": {"methods": ["vpt_shallow"], "train_per_class": [1, 4], "seeds": [0]}}
    prof = _profile(prepared, pretrained_tiny, tmp_path, sweeps)
    prof["hparams"]["vpt_shallow"] = {"epochs": 2, "lr": 0.5, "optimizer": "adamw"}  # a start the grid leaves
    prof["grids"] = {"vpt_shallow": {"lr": [1e-7, 0.01]}}
    df = run_sweep(prof, "few", workers=1, progress=False)
    chosen = pd.read_csv(tmp_path / "s" / "vpt_shallow" / "tuning.csv").query("chosen").lr.item()
    assert chosen in (1e-7, 0.01) and set(df.lr) == {chosen}  # not the starting 0.5
    train = int((read_manifest(prepared).split == "train").sum())
    steps = 2 * -(-train // 16)  # the main run's: 2 epochs over the whole training split, batch 16
    assert list(df.steps) == [steps, steps] and list(df.train_images) == [4, 16]
    history = records.read_history(Path(df.run_dir[0]))
    assert list(history.steps) == [steps // 2, steps]
    table = report.sweep_settings(df, "train_per_class")  # what the Curves page states per point
    assert table.loc["VPT-shallow", ("setting", "lr")] == f"{chosen:g}"
    assert table.loc["VPT-shallow", ("setting", "epochs")] == 2
    assert table.loc["VPT-shallow", ("optimiser steps at training images per class", "1")] == f"{steps}"
    assert "whole* training split" in report.sweep_budget_markdown()


def test_a_sweep_has_no_hparams_of_its_own(prepared, tiny_model, tmp_path):
    sweeps = {"few": {"methods": ["linear"], "seeds": [0], "hparams": {"linear": {"epochs": 1}}}}
    with pytest.raises(UserError, match="tuned main-table setting"):
        grid(_profile(prepared, tiny_model, tmp_path, sweeps), "few")
