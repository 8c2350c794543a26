"""Hyper-parameters chosen on validation: grids in profiles, one seed per point, test only for the chosen."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vptlib import REPO, report
from vptlib.errors import UserError
from vptlib.runs import ledger, records
from vptlib.runs.engine import run
from vptlib.study import tuning
from vptlib.study.profile import Profile, load


def _profile(prepared, model, tmp_path, grids, seeds=(0, 1)) -> Profile:
    return Profile(
        profile="t",
        model=str(model),
        data=str(prepared),
        runs=str(tmp_path / "runs"),
        seeds=list(seeds),
        device="cpu",
        precision="fp32",
        batch_size=16,
        hparams={"vpt_shallow": {"epochs": 2, "optimizer": "adamw", "lr": 0.01}},
        grids=grids,
    )


def _ledger(tmp_path) -> list[dict]:
    return ledger.read_ledger(tmp_path / "runs" / "t")


def test_grid_is_chosen_on_validation_and_losers_never_see_test(prepared, pretrained_tiny, tmp_path):
    prof = _profile(prepared, pretrained_tiny, tmp_path, {"vpt_shallow": {"lr": [1e-7, 0.01]}})
    done = tuning.run_method(prof, "vpt_shallow", progress=False)
    grid = done.tuned.grid
    assert list(grid.lr) == [1e-7, 0.01] and grid.chosen.sum() == 1
    best = tuning.choose(grid, "smallest_lr")  # VPT's rule
    assert grid.chosen[best] and done.tuned.config.lr == grid.lr[best]
    assert grid.val_acc[best] >= grid.val_acc[1 - best]
    root = tmp_path / "runs" / "t" / "vpt_shallow"
    loser = root / grid.run_id[1 - best]
    loser_metrics = json.loads((loser / "metrics.json").read_text())
    assert loser_metrics["test"] is None and loser_metrics["test_evaluated"] is False
    assert set(pd.read_csv(loser / "predictions.csv").split) == {"val"}
    # No reported run is a grid point: the grid ran with its own seed, every reported seed afresh.
    assert (
        prof.grid_seed == 2
        and done.tuned.seed == 2
        and set(grid.run_id).isdisjoint(r.run_dir.name for r in done.results)
    )
    seeds = {d.name: json.loads((d / "config.json").read_text())["seed"] for d in records.run_dirs(root)}
    assert {seeds[r] for r in grid.run_id} == {2} and [seeds[r.run_dir.name] for r in done.results] == [0, 1]
    chosen = json.loads((root / grid.run_id[best] / "metrics.json").read_text())
    assert chosen["test"] is None  # the winner never looked at test either
    assert [r.metrics["test"] is not None for r in done.results] == [True, True]
    looks = _ledger(tmp_path)
    assert sorted(e["run_id"] for e in looks) == sorted(r.run_dir.name for r in done.results)
    assert grid.run_id[1 - best] not in {e["run_id"] for e in looks}
    assert (root / tuning.TUNING).is_file()
    table = report.tuning_table(done.tuned)
    assert table["chosen"].tolist().count("\u2713 chosen") == 1 and "val acc (%)" in table.columns


def test_a_validation_only_run_completed_with_test_equals_an_ordinary_run(prepared, pretrained_tiny, tmp_path):
    """A finished run without test, reused by a configuration that asks for test, is evaluated
    through its predictor (record_writer.add_test) and ends as an ordinary run's record."""
    import dataclasses

    prof = _profile(prepared, pretrained_tiny, tmp_path, {}, seeds=[0])
    cfg = prof.run_config("vpt_shallow", lr=0.01)
    first = run(dataclasses.replace(cfg, evaluate_test=False), progress=False)
    promoted = run(cfg, reuse=True, progress=False)
    assert promoted.run_dir == first.run_dir and promoted.metrics["test_evaluated"]
    plain = run(prof.run_config("vpt_shallow", lr=0.01, out=str(tmp_path / "plain")), progress=False)
    assert promoted.metrics["test"] == plain.metrics["test"]
    a = pd.read_csv(promoted.run_dir / "predictions.csv").sort_values(["split", "path"]).reset_index(drop=True)
    b = pd.read_csv(plain.run_dir / "predictions.csv").sort_values(["split", "path"]).reset_index(drop=True)
    probs = [c for c in a.columns if c.startswith("prob_")]
    assert (a[["split", "path", "pred"]] == b[["split", "path", "pred"]]).all().all()
    np.testing.assert_allclose(a[probs].to_numpy(), b[probs].to_numpy(), atol=1e-6)


def test_rerun_reuses_every_point_and_looks_at_test_no_more(prepared, pretrained_tiny, tmp_path):
    prof = _profile(prepared, pretrained_tiny, tmp_path, {"vpt_shallow": {"lr": [0.01, 0.02]}}, seeds=[0])
    first = tuning.run_method(prof, "vpt_shallow", progress=False)
    looks = len(_ledger(tmp_path))
    again = tuning.run_method(prof, "vpt_shallow", progress=False)
    assert list(again.tuned.grid.run_id) == list(first.tuned.grid.run_id)
    assert [r.run_dir for r in again.results] == [r.run_dir for r in first.results]
    assert len(_ledger(tmp_path)) == looks == 1
    assert len(records.run_dirs(tmp_path / "runs" / "t" / "vpt_shallow")) == 3  # two grid points, one seed


def test_an_override_fixes_its_axis():
    prof = Profile(profile="t", model="m", data="d", grids={"vpt_deep": {"lr": [0.1, 0.5], "weight_decay": [0, 1e-4]}})
    assert len(tuning.grid_points(prof, "vpt_deep")) == 4
    assert tuning.grid_points(prof, "vpt_deep", {"lr": 0.3}) == [{"weight_decay": 0}, {"weight_decay": 1e-4}]
    assert tuning.grid_points(prof, "vpt_deep", {"lr": 0.3, "weight_decay": 0.0}) == []
    assert tuning.grid_points(prof, "vpt_shallow") == []
    assert tuning.grid_points(prof, "vpt_deep", {"lr": None}) == tuning.grid_points(prof, "vpt_deep")


def test_choice_rule_ties_and_missing_scores():
    grid = pd.DataFrame({"val_acc": [0.8, 0.9, 0.9, np.nan], "val_loss": [0.1, 0.5, 0.4, 0.0]})
    assert tuning.choose(grid) == 2  # best accuracy, then the lower loss
    assert tuning.choose(pd.DataFrame({"val_acc": [0.9, 0.9], "val_loss": [0.3, 0.3]})) == 0  # then the first
    assert tuning.choose(pd.DataFrame({"val_acc": [np.nan, 0.1], "val_loss": [0.0, 9.0]})) == 1


def test_vpt_breaks_ties_to_the_smallest_lr_as_its_paper_does():
    grid = pd.DataFrame(
        {"lr": [0.5, 0.05, 0.1, 0.01], "val_acc": [0.9, 0.9, 0.9, 0.8], "val_loss": [0.1, 0.3, 0.2, 0.0]}
    )
    assert tuning.choose(grid, "smallest_lr") == 1  # KMnP/vpt: the smallest lr among the tied, whatever the loss
    assert tuning.choose(grid, "loss") == 0  # the study's own rule: the lower loss
    assert tuning.choose(grid.assign(val_acc=[0.9, np.nan, 0.9, 0.8]), "smallest_lr") == 2  # a missing score loses
    from vptlib.methods import METHODS

    assert METHODS["vpt_shallow"].defaults.grid_ties == METHODS["vpt_deep"].defaults.grid_ties == "smallest_lr"
    assert all(s.defaults.grid_ties in tuning.TIE_RULES for s in METHODS.values())  # every rule is stated
    assert "smallest learning rate" in report.tie_rule_html("vpt_deep")
    with pytest.raises(ValueError, match="unknown tie rule"):
        tuning.choose(grid, "largest_lr")


def test_a_base_lr_axis_is_on_vpts_scale():
    assert tuning.fields({"base_lr": 0.4, "weight_decay": 0.0}, 32) == {"lr": 0.4 * 32 / 256, "weight_decay": 0.0}
    assert tuning.fields({"base_lr": 2.0, "batch_size": 64}, 32)["lr"] == 0.5  # the point's own batch size
    prof = Profile(profile="t", model="m", data="d", grids={"vpt_deep": {"base_lr": [0.1, 1.0]}})
    assert tuning.grid_points(prof, "vpt_deep", {"lr": 0.3}) == []  # a user's lr fixes the lr on any scale
    full = load(REPO / "profiles" / "full.yaml")
    for method in ("vpt_shallow", "vpt_deep"):  # KMnP/vpt's train_type "prompt" grid, weight decay 0 included
        assert sorted(full.grids[method]["base_lr"]) == [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0]
        assert sorted(full.grids[method]["weight_decay"]) == [0.0, 0.0001, 0.001, 0.01]


def test_a_choice_on_the_grids_edge_is_said():
    axes = {"lr": [0.01, 0.1, 1.0], "weight_decay": [0.0, 0.01], "optimizer": ["sgd", "adamw"]}
    assert tuning.edge_notes(axes, {"lr": 0.1, "weight_decay": 0.0, "optimizer": "sgd"}) == []
    notes = tuning.edge_notes(axes, {"lr": 1.0, "weight_decay": 0.01, "optimizer": "sgd"})
    assert len(notes) == 2 and "lr 1 is the largest" in notes[0] and "weight_decay 0.01 is the largest" in notes[1]
    assert "lr 0.01 is the smallest" in tuning.edge_notes(axes, {"lr": 0.01})[0]
    html = report.tuning_edges_html(tuning.Tuned(None, pd.DataFrame(), ["lr"], 2, notes))
    assert "On the edge of the grid" in html and "optimum may lie beyond" in html
    assert report.tuning_edges_html(tuning.Tuned(None, pd.DataFrame(), ["lr"], 2)) == ""


def test_a_diverging_grid_point_loses_and_the_grid_goes_on(prepared, tiny_model, tmp_path, capsys):
    prof = _profile(prepared, tiny_model, tmp_path, {"vpt_shallow": {"lr": [0.01, 1e30]}})
    prof.hparams["vpt_shallow"] = {"epochs": 1, "optimizer": "sgd", "grad_clip": 0}
    tuned = tuning.tune(prof, "vpt_shallow", progress=False)
    grid = tuned.grid
    assert list(grid.chosen) == [True, False] and tuned.config.lr == 0.01
    assert grid.error[0] == "" and "loss became" in grid.error[1] and np.isnan(grid.val_acc[1])
    out = capsys.readouterr().out
    assert "diverged and is not chosen" in out and "is the smallest the grid tried" in out
    assert "error" in report.tuning_table(tuned).columns


@pytest.mark.parametrize(
    ("grids", "message"),
    [
        ({"zero_shot": {"lr": [0.1]}}, "not a method that trains"),
        ({"vpt_deep": {"colour": [1]}}, "'colour' is not a tunable field or option of vpt_deep"),
        ({"vpt_deep": {"lr": []}}, "must be a non-empty list"),
        ({"vpt_deep": {"lr": 0.1}}, "must be a non-empty list"),
        ({"linear": {"prompt_tokens": [1]}}, "not a tunable field or option of linear"),
        ({"vpt_deep": [0.1]}, "must map axes"),
        ({"vpt_deep": {"lr": [0.1], "base_lr": [1.0]}}, "give lr or base_lr"),
    ],
)
def test_bad_grids_are_one_line(tmp_path, grids, message):
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"profile": "p", "model": "m", "data": "d", "grids": grids}))
    with pytest.raises(UserError, match=message):
        load(path)


@pytest.mark.parametrize("name", ["smoke", "full", "kaggle-full"])
def test_shipped_profiles_tune_every_trained_method_but_the_closed_form_probe(name):
    from vptlib import REPO
    from vptlib.methods import METHODS

    prof = load(REPO / "profiles" / f"{name}.yaml")
    tuned = set(prof.grids)
    # The probe picks C on validation; a fixed recipe (CoOp, CLAP, Tip-Adapter-F) tunes nothing.
    assert tuned == {m for m, s in METHODS.items() if s.trains and not s.fixed_recipe} - {"linear"}
    if name == "smoke":
        assert all(len(tuning.grid_points(prof, m)) == 2 for m in tuned)  # exercises the pipeline, cheaply


def test_dry_run_cuts_every_run_and_marks_every_page(monkeypatch, tmp_path):
    from vptlib.methods import METHODS as SPECS
    from vptlib.study import book
    from vptlib.study.sweep import grid as sweep_grid

    full = load(REPO / "profiles" / "full.yaml")
    monkeypatch.setenv("VPTLIB_DRY_RUN", "1")
    dry = load(REPO / "profiles" / "full.yaml")
    assert dry.dry_run and dry.profile == "full-dry-run" and dry.seeds == full.seeds[:1]
    assert dry.data == full.data and dry.model == full.model  # the real model and data
    for method in full.hparams:
        cfg = dry.run_config(method).resolved()
        trains = SPECS[method].trains  # zero-shot and GDA train nothing
        assert cfg.epochs == (1 if trains else 0), method
        assert len(tuning.grid_points(dry, method)) == (1 if method in full.grids else 0)
    # A costly option marked for rehearsal (ProLIP's cached views) is cut too, not only epochs.
    assert dry.run_config("prolip").options["views"] == 2 and "views" not in full.run_config("prolip").options
    for name, sweep in dry.sweeps.items():
        assert sweep["seeds"] == full.sweeps[name]["seeds"][:1]
        assert all(len(v) == 1 for k, v in sweep.items() if k not in ("methods", "seeds"))
        assert all(cfg.epochs <= 1 for _, cfg in sweep_grid(dry, name, check=False))  # the main table's budget
    assert "Dry run" in book.banner_text(REPO / "profiles" / "full.yaml")
    monkeypatch.setenv("VPTLIB_DRY_RUN", "0")
    assert load(REPO / "profiles" / "full.yaml") == full


def test_the_tuning_seed_is_never_a_reported_seed(tmp_path):
    path = tmp_path / "p.yaml"
    base = "profile: p\nmodel: m\ndata: d\nseeds: [0, 1, 2]\n"
    path.write_text(base)
    assert load(path).grid_seed == 3
    path.write_text(base + "tuning_seed: 1\n")
    with pytest.raises(UserError, match="tuning_seed 1 is a reported seed"):
        load(path)
    path.write_text(base + "tuning_seed: 7\n")
    assert load(path).grid_seed == 7


def test_a_notebook_outside_the_build_leaves_the_books_records_alone(prepared, pretrained_tiny, tmp_path, monkeypatch):
    """Plain papermill or a notebook opened by hand: its grid and its seeds' runs are named in
    files of their own, never in the group.json and tuning.csv the book's pages read."""
    import sys
    import types

    from vptlib import switches

    prof = _profile(prepared, pretrained_tiny, tmp_path, {"vpt_shallow": {"lr": [1e-7, 0.01]}})
    book = tuning.run_method(prof, "vpt_shallow", progress=False)  # the book's own row
    root = tmp_path / "runs" / "t" / "vpt_shallow"
    group, grid = (root / records.GROUP).read_text(), (root / tuning.TUNING).read_text()
    monkeypatch.delenv(switches.BOOK, raising=False)
    shell = type("ZMQInteractiveShell", (), {"__module__": "ipykernel.zmqshell"})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    outside = tuning.run_method(prof, "vpt_shallow", {"epochs": 1}, progress=False)
    assert (root / records.GROUP).read_text() == group and (root / tuning.TUNING).read_text() == grid
    named = json.loads((root / records.GROUP_OUTSIDE).read_text())["runs"]
    assert named == [r.run_dir.name for r in outside.results] != [r.run_dir.name for r in book.results]
    assert (root / tuning.TUNING_OUTSIDE).is_file()
