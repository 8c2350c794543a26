"""The one selection rule every choice on validation uses."""

from __future__ import annotations

import math

import pytest

from vptlib.selection import best_index, improves


def test_higher_accuracy_then_lower_loss_then_the_callers_tiebreak_then_the_first():
    rows = [
        {"val_acc": 0.8, "val_loss": 0.5, "c": 3},
        {"val_acc": 0.9, "val_loss": 0.7, "c": 2},
        {"val_acc": 0.9, "val_loss": 0.6, "c": 9},
        {"val_acc": 0.9, "val_loss": 0.6, "c": 1},
        {"val_acc": 0.9, "val_loss": 0.6, "c": 1},
    ]
    assert best_index(rows) == 2  # accuracy, then loss, then the first
    assert best_index(rows, tiebreak=lambda r: r["c"]) == 3  # the simpler setting, then the first


def test_a_missing_score_never_wins():
    rows = [{"val_acc": math.nan, "val_loss": math.nan}, {"val_acc": 0.1, "val_loss": 9.0}]
    assert best_index(rows) == 1
    with pytest.raises(ValueError):
        best_index([])


def test_an_epoch_must_strictly_improve():
    assert improves(0.9, 0.5, 0.8, 0.1) and improves(0.8, 0.09, 0.8, 0.1)
    assert not improves(0.8, 0.1, 0.8, 0.1)  # a tie keeps the earlier epoch
    assert improves(0.1, 1.0, -1.0, math.inf)  # the first epoch beats the empty start
