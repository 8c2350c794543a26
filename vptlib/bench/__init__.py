"""``make bench``: what each method costs on this machine, on the real ViT-B/32 architecture.

Random weights are fine for cost. :mod:`.timing` times one configuration per process (its
own peak memory); :mod:`.cli` runs every configuration in several interleaved rounds, so
load on the machine hits a round's configurations alike; :mod:`.verdicts` turns the
rounds into PASS, FAIL, N/A (not applicable on this hardware) or ``noisy: rerun`` when
the rounds disagree, estimates what ``make book`` (full profile) costs here, and runs
the bf16 accuracy check (the smoke profile's methods trained in fp32 and in bf16 on the
tiny model); :mod:`.peers` times vptlib's VPT step beside a KMnP/vpt-style port and
Hugging Face's whole layers in one process, and the machine's matmul peak that every
step's FLOPs are compared with; :mod:`.scaling` times ``prepare``, the caches and a VPT
epoch at growing data sizes (its own record, ``scaling-<machine>.json``); :mod:`.output` writes ``benchmarks/results/<machine>.json`` / ``.md`` /
``.png`` and the README's benchmark section.
"""

from .output import README_END, README_START, accuracy_markdown, cost_markdown, markdown, plot, update_readme
from .timing import ADAMW_FULL, METHODS, SAME_COST, data_throughput, machine_name, measure
from .verdicts import NOISY, accuracy_check, grid_runs, study_cost, targets, verdict

__all__ = [
    "ADAMW_FULL",
    "METHODS",
    "NOISY",
    "README_END",
    "README_START",
    "SAME_COST",
    "accuracy_check",
    "accuracy_markdown",
    "cost_markdown",
    "data_throughput",
    "grid_runs",
    "machine_name",
    "markdown",
    "measure",
    "plot",
    "study_cost",
    "targets",
    "update_readme",
    "verdict",
]
