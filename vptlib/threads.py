"""How many threads a process of the build may use: the cores it can actually have.

On two cores, two pages that each thread over both made a tiny training step 90 times
slower, and on a machine busy with other work the tiny model's warm-up went from half a
minute to twelve: threads that outnumber the free cores wait for each other at every
barrier, and OpenMP's waiting threads spin, taking the cores the working one needs. So:

- each process gets its share of the cores, ``cores / share`` (``share``: the pages make
  runs at once, ``JOBS``), and no more than the cores idle as it starts, at least one:
  ``cores`` are the CPUs it may run on (affinity and a cgroup quota, not the machine's
  count), idle ones measured over a tenth of a second (``/proc/stat``; the load average
  lags by a minute, so the step before would count as other work);
- a waiting OpenMP thread sleeps instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), so a
  thread descheduled by other work costs its own time, not everyone's.

The Makefile exports both (``python -m vptlib.threads JOBS``); ``vptlib`` sets the same
defaults for a command typed by hand. A value you set yourself is never replaced.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
CGROUP_MAX = Path("/sys/fs/cgroup/cpu.max")


def cores() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup v2 quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    try:
        quota, period = CGROUP_MAX.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def cpu_ticks(line: str) -> tuple[int, int]:
    """(idle, all) clock ticks of a /proc/stat ``cpu`` line: idle + iowait, and every field."""
    fields = [int(x) for x in line.split()[1:]]
    return fields[3] + fields[4], sum(fields)


def _cpu_times() -> tuple[int, int]:
    return cpu_ticks(Path("/proc/stat").read_text().split("\n", 1)[0])


def idle(cpus: int, window: float = 0.1) -> float:
    """Cores idle now: the machine's idle share over ``window`` seconds, times ``cpus`` (where
    /proc/stat is missing: ``cpus`` less the one-minute load average)."""
    try:
        idle0, total0 = _cpu_times()
        time.sleep(window)
        idle1, total1 = _cpu_times()
        share = (idle1 - idle0) / max(1, total1 - total0)
        return cpus * share if total1 > total0 else float(cpus)
    except (OSError, ValueError, IndexError):
        try:
            return max(0.0, cpus - os.getloadavg()[0])
        except (OSError, AttributeError):
            return float(cpus)


def threads(share: int = 1, cpus: int | None = None, free: float | None = None) -> int:
    """Threads for one of ``share`` processes started together: its share of the cores, and
    no more than are idle (rounded: 1.6 idle cores are two), at least one."""
    cpus = cores() if cpus is None else cpus
    free = idle(cpus) if free is None else free
    return max(1, min(math.ceil(cpus / max(1, share)), round(free)))


SHARE_ENV = "VPTLIB_PROCESSES"  # the processes a build runs at once (make book: JOBS)


def set_defaults() -> None:
    """Set ``OMP_NUM_THREADS`` and the passive wait policy for this process and its children
    (a page's kernel), unless already set; before torch is imported (OpenMP reads them once)."""
    os.environ.setdefault(*WAIT_POLICY)
    if "OMP_NUM_THREADS" not in os.environ:
        text = os.environ.get(SHARE_ENV, "1")
        os.environ["OMP_NUM_THREADS"] = str(threads(int(text) if text.isdigit() else 1))


def main(argv: list[str] | None = None) -> int:
    """``python -m vptlib.threads [SHARE]``: print the thread count for one of SHARE processes."""
    args = argv if argv is not None else sys.argv[1:]
    try:
        share = int(args[0]) if args else 1
    except ValueError:
        print(f"error: usage: python -m vptlib.threads [PROCESSES] (a whole number, not {args[0]!r})", file=sys.stderr)
        return 2
    print(threads(share))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
