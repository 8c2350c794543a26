"""Exclusive locks for commands that write one output: two ``prepare`` on one ``--out``,
or two processes training (or resuming) one run, must not both proceed.

A lock is a :class:`filelock.FileLock` (``flock`` on POSIX, ``msvcrt.locking`` on
Windows) on a small file that names its holder (pid, host, command, start time). The
operating system releases it when the holder exits, also on SIGKILL, so a killed command
never leaves a stale lock behind; the second command fails at once with one line that
says who holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import filelock

from .errors import UserError

LOCK_NAME = ".vptlib.lock"


def _write_holder(fd: int) -> None:
    # Called by filelock with the locked descriptor, before the block runs: the holder's
    # name sits in the lock file itself, so no second file can disagree with it.
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv)[:300],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode())


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block.

    By default a lock held by another process is a :class:`UserError` naming the holder
    (two commands on one output must not both proceed). ``wait=True`` queues instead, for
    short critical sections that every process must pass (appending to a shared ledger).
    """
    path = Path(folder) / LOCK_NAME
    # preserve_lock_file: the file stays, so a reader never races its deletion; the lock,
    # not the file's existence, is what excludes.
    lock = filelock.FileLock(path, timeout=-1 if wait else 0, preserve_lock_file=True, on_acquired=_write_holder)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise UserError(f"{what} is in use by {_holder(path)}; wait for it to finish or stop it first") from None
    try:
        yield
    finally:
        lock.release()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} ({info.get('command')})"
