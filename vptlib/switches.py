"""Environment switches, read in one place and refused unless they hold a documented value.

``DRY_RUN=no`` must not turn a dry run *on*, and a ``RANK=1`` left over from a cluster job
must not silently make ``vptlib run`` a worker that writes nothing. :func:`check` validates
every switch at the start of each command, so a bad one is one line and exit code 2.
"""

from __future__ import annotations

import os
import re

from .errors import UserError

TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")
# vptlib's own yes/no switches: what each turns on.
FLAGS = {
    "VPTLIB_DRY_RUN": "every run cut to one epoch, one seed and the first grid point (make book DRY_RUN=1)",
    "VPTLIB_STATIC": "pages rendered without live widgets (set while the book executes)",
    "VPTLIB_OFFLINE": "data fetch refuses the network",
    "VPTLIB_BOOK": "a page executed by the book's build (make book, make run): only such a page names the runs "
    "the book shows (group.json)",
}
BOOK = "VPTLIB_BOOK"
# The launcher's variables for data-parallel runs (accelerate launch, torchrun).
DISTRIBUTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def flag(name: str) -> bool:
    """The value of yes/no switch ``name``: one of :data:`TRUE` or :data:`FALSE`, any case."""
    value = os.environ.get(name, "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    what = f" ({FLAGS[name]})" if name in FLAGS else ""
    raise UserError(
        f"{name}={os.environ[name]!r}{what} is not a yes/no value: use one of {', '.join(TRUE)} "
        f"or {', '.join(v for v in FALSE if v)} (or leave it unset)"
    )


def whole_number(text: str) -> int | None:
    """``text`` as a whole number >= 0 written in ASCII digits, else None. ``str.isdigit`` also
    accepts superscripts and other scripts' digits ("²", "٣"), which ``int`` then refuses."""
    text = text.strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) else None


def _int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = whole_number(raw)
    if value is None:
        raise UserError(f"{name}={raw!r} must be a whole number >= 0 (set by a launcher such as accelerate launch)")
    return value


def world() -> tuple[int, int]:
    """(rank, world size) of this process, checked for consistency: a rank needs a world
    size above it, so a stray ``RANK`` without a launcher is refused, never obeyed."""
    rank, size, local = _int("RANK"), _int("WORLD_SIZE"), _int("LOCAL_RANK")
    if size is not None and size < 1:
        raise UserError(f"WORLD_SIZE={size} must be at least 1")
    size = size or 1
    rank = 0 if rank is None else rank
    if rank >= size or (local is not None and local >= size):
        raise UserError(
            f"RANK={os.environ.get('RANK')} with WORLD_SIZE={os.environ.get('WORLD_SIZE', 'unset')}: this is not "
            f"a process of a parallel launch (a variable left from another job?); unset RANK, LOCAL_RANK and "
            f"WORLD_SIZE, or start the run with `accelerate launch`"
        )
    if size > 1 and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise UserError(
            f"WORLD_SIZE={size} but MASTER_ADDR/MASTER_PORT are unset: this is not a process of a parallel "
            f"launch (variables left from another job?); unset RANK and WORLD_SIZE, or use `accelerate launch`"
        )
    return rank, size


CELL_TIMEOUT = "VPTLIB_CELL_TIMEOUT"  # make book TIMEOUT=<seconds>
# A notebook cell of the book that runs longer than this fails the build. A cell trains a
# whole method (its grid and every seed), so the default is generous; 0 means no limit.
DEFAULT_CELL_TIMEOUT_S = 6 * 3600


def cell_timeout() -> int | None:
    """Seconds one notebook cell may run while the book executes (None: no limit)."""
    raw = os.environ.get(CELL_TIMEOUT, "").strip()
    if raw == "":
        return DEFAULT_CELL_TIMEOUT_S
    value = whole_number(raw)
    if value is None:
        raise UserError(f"{CELL_TIMEOUT}={raw!r} (make TIMEOUT=) must be a whole number of seconds, 0 for no limit")
    return value or None


def check() -> None:
    """Validate every switch (a :class:`UserError` names the first bad one)."""
    for name in FLAGS:
        flag(name)
    world()
    cell_timeout()
