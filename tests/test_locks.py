"""vptlib.locks through filelock: the holder is named, a killed holder frees the lock, waiters queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from vptlib import locks
from vptlib.errors import UserError

HOLD = textwrap.dedent(
    """
    import sys, time
    from vptlib import locks
    with locks.exclusive(sys.argv[1], "it"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_another_process_holding_it_is_named(tmp_path):
    proc = _holder(tmp_path)
    try:
        with (
            pytest.raises(UserError, match=rf"in use by pid {proc.pid} on .* since .*; wait for it"),
            locks.exclusive(tmp_path, "the folder"),
        ):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / locks.LOCK_NAME).is_file()  # the file stays; only the lock excludes
    with locks.exclusive(tmp_path, "the folder"):
        pass


def test_waiters_queue_and_each_runs_alone(tmp_path):
    inside, most = [0], [0]

    def work():
        with locks.exclusive(tmp_path, "the ledger", wait=True):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 1


def test_released_after_an_error_in_the_block(tmp_path):
    with pytest.raises(RuntimeError), locks.exclusive(tmp_path, "x"):
        raise RuntimeError("boom")
    with locks.exclusive(tmp_path, "x"):
        pass
