"""A download that cannot run forever.

``hf_hub_download`` times out only when no byte arrives for its read timeout, so a server that
trickles one byte every few seconds keeps it going for days. :func:`bounded` runs the download
in a worker thread and watches the bytes that reach the cache's ``*.incomplete`` files: the
download is abandoned when it runs past an overall deadline, or when after a grace period its
average rate is below a floor no usable link falls under. The partial file stays, so the next
attempt resumes it (huggingface_hub's own resume).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vptlib.errors import UserError

T = TypeVar("T")
DEADLINE_ENV = "VPTLIB_DOWNLOAD_DEADLINE_S"
DEADLINE_S = 3600.0  # per file: 605 MB at 170 kB/s
GRACE_S = 60.0  # then the average rate must reach MIN_RATE
MIN_RATE = 32 * 1024  # bytes per second


def deadline_s() -> float:
    raw = os.environ.get(DEADLINE_ENV, "").strip()
    if not raw:
        return DEADLINE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 < value < float("inf")):
        raise UserError(f"{DEADLINE_ENV}={raw!r} must be a positive number of seconds")
    return value


def _received(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.glob("*.incomplete"))
    except OSError:
        return 0


def bounded(download: Callable[[], T], partials: Path, what: str) -> T:
    """``download()``, or a :class:`UserError` naming ``what`` when it is too slow."""
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["value"] = download()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=work, name=f"download {what}", daemon=True)
    start, limit, base = time.monotonic(), deadline_s(), _received(partials)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
        elapsed = time.monotonic() - start
        rate = (_received(partials) - base) / max(elapsed, 1e-9)
        slow = elapsed > min(GRACE_S, limit) and rate < MIN_RATE
        if worker.is_alive() and (elapsed > limit or slow):
            over = elapsed > limit
            why = f"still running after {limit:.0f} s" if over else f"{rate / 1024:.1f} kB/s on average"
            raise UserError(
                f"downloading {what} was abandoned: {why} (the limit is {limit:.0f} s per file, or "
                f"{MIN_RATE // 1024} kB/s after {GRACE_S:.0f} s; {DEADLINE_ENV} sets the first). The part received is "
                f"kept and the next attempt resumes it; if the server or proxy is throttled, try a mirror (HF_ENDPOINT)"
            )
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]
