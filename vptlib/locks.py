"""Exclusive locks for commands that write one output: two ``prepare`` on one ``--out``,
or two processes training (or resuming) one run, must not both proceed.

A lock is ``fcntl.flock`` on a small file that names its holder (pid, host, command,
start time). The kernel releases it when the holder exits, also on SIGKILL, so a
killed command never leaves a stale lock behind; the second command fails at once
with one line that says who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".vptlib.lock"


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block.

    By default a lock held by another process is a :class:`UserError` naming the holder
    (two commands on one output must not both proceed). ``wait=True`` queues instead, for
    short critical sections that every process must pass (appending to a shared ledger).
    """
    path = Path(folder) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{what} is in use by {_holder(path)}; wait for it to finish or stop it first") from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv)[:300],
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} ({info.get('command')})"
