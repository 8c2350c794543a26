"""Recipe cards (vptlib/methods/cards.py) against what the study resolves and what a run does:
every method named after a paper, its settings as the full profile resolves them, and the
realised optimiser steps and learning rate of a short run (issue 42, item 3)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import tiny_config

from vptlib.methods import METHODS
from vptlib.methods import __main__ as methods_cli
from vptlib.methods.cards import CARDS, FIT_CARDS, SAME, lr_at
from vptlib.study import profile as profiles

ROOT = Path(__file__).resolve().parents[2]
FULL = profiles.load(ROOT / "profiles" / "full.yaml")
# Methods named after a paper; each must carry a card (the others are the study's own).
NAMED_AFTER_A_PAPER = {
    "coop",
    "clap",
    "tip_adapter_f",
    "vpt_shallow",
    "vpt_deep",
    "clip_lora",
    "wise_ft",
    "flyp",
    "prolip",
    "clip_svd",
}
FITTED_IN_CLOSED_FORM = {"gda"}  # named after a paper, nothing optimised: a FitCard


def test_every_method_named_after_a_paper_has_a_card():
    assert set(CARDS) == NAMED_AFTER_A_PAPER and set(METHODS) >= NAMED_AFTER_A_PAPER
    assert set(FIT_CARDS) == FITTED_IN_CLOSED_FORM and not any(METHODS[m].trains for m in FIT_CARDS)
    for method, card in [*CARDS.items(), *FIT_CARDS.items()]:
        for name, item in card.items():
            assert item.source and (item.study is SAME or item.why or name == "augmentation"), (method, name)
            assert ":" in item.source, (method, name, "a source names its file and line")


@pytest.mark.parametrize("method", sorted(CARDS))
def test_the_cards_study_column_is_what_the_full_profile_resolves(method, tiny_model):
    card, cfg = CARDS[method], FULL.run_config(method).resolved()
    if card.epoch == "full":  # one step on every training image, whatever the run's batch size
        assert _built(method, tiny_model).full_batch
    else:
        assert card.batch.ours == cfg.batch_size
    assert card.epochs.ours == cfg.epochs
    assert card.optimizer.ours == cfg.optimizer
    assert card.lr.ours == pytest.approx(cfg.lr)
    assert card.weight_decay.ours == pytest.approx(cfg.weight_decay)
    assert card.warmup.ours == cfg.warmup


@pytest.mark.parametrize("method", sorted(CARDS))
def test_a_short_run_takes_the_cards_steps_at_the_cards_learning_rates(method, prepared, tiny_model, tmp_path):
    """Two epochs at the card's batch and lr, one warm-up epoch where the card has one: the
    realised optimiser steps per epoch and each epoch's final lr follow the card's rule."""
    from vptlib.runs.engine import run

    card = CARDS[method]
    warm = 1 if card.warmup.ours else 0
    cfg = tiny_config(
        prepared,
        tiny_model,
        tmp_path,
        method=method,
        epochs=3,
        batch_size=16 if card.epoch == "full" else card.batch.ours,
        lr=card.lr.ours,
        optimizer=card.optimizer.ours,
        weight_decay=card.weight_decay.ours,
        warmup=warm,
        options={"views": 4} if method == "prolip" else {},  # 300 cached views take minutes here
    )
    res = run(cfg, progress=False)
    n = _train_size(res)
    per_epoch = card.steps_per_epoch(n)
    hist = res.history
    assert list(hist["steps"]) == [per_epoch * (e + 1) for e in range(3)], (n, per_epoch)
    total = 3 * per_epoch
    # The last param group's lr after each epoch, a constant multiple of the schedule's factor
    # (a method may scale one group's lr; the schedule is what the card states).
    factors = [lr_at(int(s), 1.0, warm * per_epoch, total) for s in hist["steps"]]
    ratios = [lr / f for lr, f in zip(hist["lr"], factors, strict=True) if f > 1e-9]
    assert all(math.isclose(r, ratios[0], rel_tol=1e-6) for r in ratios), (list(hist["lr"]), factors)


def _built(method: str, model: Path):
    from vptlib.methods import build
    from vptlib.models.backbone import load_clip

    return build(method, load_clip(model), 4)


def _train_size(res) -> int:
    import json

    cfg = json.loads((res.run_dir / "config.json").read_text())
    return int(cfg["splits"]["train"])


def test_the_methods_page_recipe_table_is_the_cards():
    page = (ROOT / "book" / "methods.md").read_text()
    inside = page.split(methods_cli.RECIPES_START)[1].split(methods_cli.RECIPES_END)[0].strip()
    assert inside == methods_cli.recipes_markdown(), "run: python -m vptlib.methods --recipes book/methods.md"
    coop = inside.split("**CoOp**")[1].split("**")[0]  # one table per card, four columns
    assert "| setting | paper's code (source) | this study | why |" in coop
    assert "| schedule | cosine per epoch after a constant warm-up (CoOp configs/<wbr>trainers/" in coop
