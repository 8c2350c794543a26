"""The study's one selection rule, used for every choice made on validation: the epoch of a
run, the point of a tuning grid, the linear probe's regularisation, WiSE-FT's alpha.

Higher validation accuracy wins; on a tie, lower validation loss; on a tie again, the
candidate the caller names as simpler (``tiebreak``, smaller first), then the first one.
A method whose paper breaks accuracy ties its own way (VPT's grid: the smallest learning
rate) passes ``tiebreak_first``, and its tiebreak then comes before the loss.
A missing number (NaN) ranks below every real one. Nothing here ever reads test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def validation_key(val_acc: float, val_loss: float) -> tuple[float, float]:
    """Sort key, smaller is better: ``(-accuracy, loss)``, NaN last."""
    acc = -1.0 if val_acc is None or math.isnan(val_acc) else val_acc
    loss = math.inf if val_loss is None or math.isnan(val_loss) else val_loss
    return (-acc, loss)


def best_index(
    rows: Sequence[dict[str, Any]],
    tiebreak: Callable[[dict[str, Any]], float] | None = None,
    tiebreak_first: bool = False,
) -> int:
    """Index of the best of ``rows`` (each with ``val_acc`` and ``val_loss``) by the rule above."""
    if not rows:
        raise ValueError("nothing to choose from")

    def key(i: int) -> tuple[float, ...]:
        r = rows[i]
        acc, loss = validation_key(r["val_acc"], r["val_loss"])
        simpler = tiebreak(r) if tiebreak else 0.0
        return (acc, simpler, loss, i) if tiebreak_first else (acc, loss, simpler, i)

    return min(range(len(rows)), key=key)


def improves(val_acc: float, val_loss: float, best_acc: float, best_loss: float) -> bool:
    """True if an epoch beats the best so far (strictly: a tie keeps the earlier epoch)."""
    return validation_key(val_acc, val_loss) < validation_key(best_acc, best_loss)
