"""Threads sized to the cores a process can have (vptlib.threads): its share of the build's
cores, never more than are idle, at least one; waiting threads sleep. Every branch is forced
here with explicit numbers, so no test depends on this machine's cores or load."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vptlib import threads


@pytest.mark.parametrize(
    ("share", "cpus", "free", "expected"),
    [
        (1, 2, 1.9, 2),  # an idle two-core machine: both cores
        (2, 2, 1.9, 1),  # two pages at once (make book, JOBS=2): one each
        (1, 2, 0.1, 1),  # two other CPU-bound processes: one thread, never zero
        (1, 64, 10.2, 10),  # a big shared machine: only the idle cores
        (4, 64, 60.0, 16),  # four pages on a quiet big machine: a quarter each
        (3, 2, 2.0, 1),  # more pages than cores
    ],
)
def test_threads_are_the_share_and_no_more_than_idle(share, cpus, free, expected):
    assert threads.threads(share, cpus=cpus, free=free) == expected


def test_idle_cores_are_measured_now_not_a_minute_ago(monkeypatch):
    times = iter([(100, 1000), (150, 1100)])  # half of the window idle
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(times))
    assert threads.idle(8, window=0) == pytest.approx(4.0)

    def missing():
        raise OSError("no /proc")

    monkeypatch.setattr(threads, "_cpu_times", missing)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.0, 0, 0))
    assert threads.idle(8, window=0) == 5.0  # elsewhere: the load average


def test_a_cgroup_quota_caps_the_cores(tmp_path, monkeypatch):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs
    monkeypatch.setattr(threads, "CGROUP_MAX", quota)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert threads.cores() == 1
    quota.write_text("max 100000\n")
    assert threads.cores() == 16


def test_defaults_never_replace_what_the_user_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.set_defaults()
    assert threads.os.environ["OMP_NUM_THREADS"] == "7" and threads.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv(threads.SHARE_ENV, "2")
    monkeypatch.setattr(threads, "idle", lambda cpus, window=0.1: float(cpus))
    monkeypatch.setattr(threads, "cores", lambda: 8)
    threads.set_defaults()
    assert threads.os.environ["OMP_NUM_THREADS"] == "4"


def test_a_vptlib_command_gives_its_kernels_the_sizes():
    """`vptlib ...` sets them before torch is imported, so the process and its children use them."""
    probe = "import os, sys; sys.argv = ['vptlib', 'book', 'toc', '--out', os.devnull]; from vptlib.cli import main; main(); print(os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in threads.os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    number, policy = res.stdout.split()[-2:]
    assert policy == "PASSIVE" and 1 <= int(number) <= threads.cores(), res.stdout + res.stderr


def test_a_test_worker_threads_over_its_share_only():
    """Each of pytest-xdist's N workers (make test: -n 2) and the commands it starts use at
    most cores / N threads: they inherit the controller's environment, which conftest sizes
    for N before the workers start (the controller alone would have taken every core)."""
    import math
    import os

    import torch

    if "VPTLIB_SUITE_SET_THREADS" not in os.environ:  # tests/conftest.py's mark of its own value
        pytest.skip("OMP_NUM_THREADS was set by hand; the suite keeps it")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = math.ceil(threads.cores() / workers)
    assert int(os.environ["OMP_NUM_THREADS"]) <= share and torch.get_num_threads() <= share
