"""The one range of a seed, wherever one is given: a flag, a profile, a run's configuration."""

from __future__ import annotations

from typing import Any

MAX_SEED = 2**63 - 1  # what numpy's and torch's generators accept
SEED_RANGE = "[0, 2**63 - 1]"


def is_seed(value: Any) -> bool:
    """An integer (not a bool) in :data:`SEED_RANGE`."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED
