"""The test ledger: one line per evaluation on the test split, ``<runs>/<profile>/test-ledger.jsonl``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vptlib import atomic, locks

from .provenance import settings_hash

LEDGER = "test-ledger.jsonl"


def log_test_look(run_dir: Path, cfg, accuracy: float, others: list[tuple[float, str]] = ()) -> None:
    """Append a finished run's test evaluations to ``<runs>/<profile>/test-ledger.jsonl``.

    Every evaluation on the test split is counted, so a reader sees how many settings of
    a method were looked at on test before the one reported (one is the honest number):
    the reported one (``accuracy``), and ``others``, each ``(accuracy, what)``, that the
    run also made for a plot (a per-epoch test curve, WiSE-FT's test accuracy per alpha).
    The ledger is rewritten whole (atomically) under the profile's lock. A look already
    in it (same run, same ``what``) is not added again: a run killed after logging and
    resumed evaluates the same checkpoint, and one look is counted once.
    """
    root = run_dir.parent.parent
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    base = {"method": cfg.method, "run_id": run_dir.name, "seed": cfg.seed, "settings": settings_hash(cfg)}
    entries = [{**base, "test_accuracy": accuracy, "time": when, "what": "reported"}]
    entries += [{**base, "test_accuracy": acc, "time": when, "what": what} for acc, what in others]
    with locks.exclusive(root, f"the test ledger of {root}", wait=True):  # sweep workers queue here
        path = root / LEDGER
        old = path.read_text() if path.is_file() else ""
        seen = {(e["run_id"], e["what"]) for e in read_ledger(root)}
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries if (e["run_id"], e["what"]) not in seen)
        if lines:
            atomic.write_text(path, old + lines)


def read_ledger(root: Path) -> list[dict[str, Any]]:
    path = Path(root) / LEDGER
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
