"""The validation-free protocol (RunConfig.select = "last"): the last epoch is kept, and no
method chooses anything on validation; each falls back to its own fixed value."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from vptlib.errors import UserError
from vptlib.methods import build
from vptlib.models.backbone import load_clip
from vptlib.runs.config import SELECTIONS, RunConfig, validate
from vptlib.runs.engine import run
from vptlib.runs.evaluation import Scorer


def _run(prepared, model, tmp_path, method, select, **kw):
    cfg = RunConfig(
        method=method,
        data=str(prepared),
        model=str(model),
        out=str(tmp_path / "runs"),
        profile=f"p-{select}",
        batch_size=16,
        precision="fp32",
        device="cpu",
        select=select,
        **kw,
    )
    return run(cfg, progress=False)


def test_last_keeps_the_last_epoch_and_val_keeps_the_best(prepared, pretrained_tiny, tmp_path):
    # A learning rate that overshoots makes validation accuracy wander, so the best epoch on
    # validation is not the last one; "last" must keep the last all the same.
    kw = dict(epochs=6, lr=0.3, optimizer="sgd", options={"prompt_tokens": 2})
    val = _run(prepared, pretrained_tiny, tmp_path, "vpt_shallow", "val", **kw)
    last = _run(prepared, pretrained_tiny, tmp_path, "vpt_shallow", "last", **kw)
    hist = val.history
    # the study's rule: the highest validation accuracy, a tie to the lower validation loss, then the earlier
    best = hist[hist.val_acc == hist.val_acc.max()].sort_values(["val_loss", "epoch"]).iloc[0]
    assert val.metrics["best_epoch"] == int(best.epoch)
    assert last.metrics["best_epoch"] == 6 and last.metrics["selected_by"] == "the last epoch"
    assert list(last.history["selected_so_far"]) == [1, 2, 3, 4, 5, 6]
    # the same seeded steps: the two runs trained alike, only what they kept differs
    assert (val.history["train_loss"].to_numpy() == last.history["train_loss"].to_numpy()).all()
    preds = pd.read_csv(last.run_dir / "predictions.csv").query("split == 'val'")
    assert abs((preds.pred == preds.true).mean() - last.history["val_acc"].iloc[-1]) < 1e-9


def test_the_probe_uses_its_fixed_c_and_never_sees_validation(prepared, pretrained_tiny, tmp_path):
    tuned = _run(prepared, pretrained_tiny, tmp_path, "linear", "val")
    assert len(tuned.metrics["linear_probe_curve"]) == 96
    fixed = _run(prepared, pretrained_tiny, tmp_path, "linear", "last", options={"fixed_c": 0.01})
    assert fixed.metrics["linear_probe_C"] == 0.01 and fixed.metrics["linear_probe_curve"] == []
    assert fixed.metrics["selected_by"].startswith("fixed C")
    default = _run(prepared, pretrained_tiny, tmp_path, "linear", "last")
    assert default.metrics["linear_probe_C"] == 1.0


def test_tip_adapter_keeps_its_initial_alpha_and_beta(prepared, pretrained_tiny, tmp_path):
    kw = dict(epochs=1, options={"init_alpha": 2.0, "init_beta": 3.0})
    searched = _run(prepared, pretrained_tiny, tmp_path, "tip_adapter_f", "val", **kw).metrics
    fixed = _run(prepared, pretrained_tiny, tmp_path, "tip_adapter_f", "last", **kw).metrics
    assert "tip_search_val_acc" in searched
    assert (fixed["tip_alpha"], fixed["tip_beta"]) == (2.0, 3.0) and "tip_search_val_acc" not in fixed


def test_the_scorer_refuses_validation_under_last(tiny_model):
    inputs = SimpleNamespace(splits={"train": 0, "val": 1, "test": 2})
    assert "val" not in Scorer(inputs, SimpleNamespace(select="last")).splits
    assert "val" in Scorer(inputs, SimpleNamespace(select="val")).splits
    with pytest.raises(PermissionError, match="chooses nothing on validation"):
        Scorer(inputs, SimpleNamespace(select="last"))("val")


def test_wise_ft_takes_the_papers_fixed_alpha_without_validation(tiny_model):
    model = build("wise_ft", load_clip(tiny_model), 4, fixed_alpha=0.3)
    fine = {k: v + 1.0 for k, v in model.trainable_state().items()}
    model.mix(1.0, fine)

    def score(split):
        raise AssertionError(f"scored {split}")

    score.splits = ("train", "test")
    info = model.finalize(score)
    assert info["wise_ft_alpha"] == 0.3 and model.alpha == 0.3
    k = next(iter(fine))
    assert torch.allclose(model.trainable_state()[k], torch.lerp(model._zero_shot[k], fine[k], 0.3))
    assert build("wise_ft", load_clip(tiny_model), 4).fixed_alpha == 0.5  # Wortsman et al.'s fixed row


def test_select_is_checked():
    assert set(SELECTIONS) == {"val", "last"}
    base = RunConfig(method="vpt_shallow", data=".").resolved()
    with pytest.raises(UserError, match="--select must be"):
        validate(RunConfig(**{**base.__dict__, "select": "best"}))
    with pytest.raises(UserError, match="cannot go with --select last"):
        validate(RunConfig(**{**base.__dict__, "select": "last", "early_stopping": 2}))
