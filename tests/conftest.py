"""Shared offline fixtures: phantom data in the Kaggle layout, a prepared copy, a tiny CLIP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vptlib import threads

# Each pytest-xdist worker is one of PYTEST_XDIST_WORKER_COUNT processes on these cores, and
# the commands a test starts (a run, a book build) inherit its share: threads sized as the
# build sizes its pages' (vptlib.threads), set before torch and numpy load OpenMP and
# OpenBLAS. Two workers threading over both of two cores made a linear probe's test 121 s
# instead of 9 s in CI. The workers inherit the controller's environment, which reads this
# file first, as one process: pytest_configure below gives it the workers' share before it
# starts them, or every worker would keep the controller's (all the cores).
# A value the user set is never replaced; the suite marks its own, which the workers inherit
# (test_threads reads the mark).
SUITE_SET = "VPTLIB_SUITE_SET_THREADS"
USER_THREADS = "OMP_NUM_THREADS" in os.environ and SUITE_SET not in os.environ
if not USER_THREADS:
    os.environ[SUITE_SET] = "1"
os.environ.setdefault(threads.SHARE_ENV, os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
threads.set_defaults()

import torch  # noqa: E402  (after the thread defaults above)

from vptlib.data.phantoms import write_phantoms  # noqa: E402
from vptlib.data.prepare import PrepareOptions, prepare  # noqa: E402
from vptlib.models.offline import write_tiny_clip  # noqa: E402

# The suite must never touch the network, even on a machine that has one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VPTLIB_OFFLINE", "1")
# No test may depend on the CPU it runs on: `--precision auto` resolves to fp32 in every
# test (and in the commands they start) unless a test forces a branch itself. Both
# branches run everywhere in tests/runs/test_portability.py.
os.environ["VPTLIB_FAST_BF16"] = "0"
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_configure(config) -> None:
    """In xdist's controller (``-n N``, before it starts the workers): the environment they
    inherit says each is one of N, with its share of the threads."""
    workers = getattr(config.option, "numprocesses", None)
    if USER_THREADS or hasattr(config, "workerinput") or not isinstance(workers, int) or workers < 1:
        return
    os.environ[threads.SHARE_ENV] = str(workers)
    os.environ["OMP_NUM_THREADS"] = str(threads.threads(workers))


@pytest.fixture(scope="session")
def phantom_source(tmp_path_factory) -> Path:
    return write_phantoms(tmp_path_factory.mktemp("phantoms"), per_class=40, size=128, seed=0)


@pytest.fixture(scope="session")
def prepared(phantom_source, tmp_path_factory) -> Path:
    """30 train (24 train + 6 val) and 20 test images per class, from the phantoms."""
    out = tmp_path_factory.mktemp("prepared")
    prepare(PrepareOptions(phantom_source, out, train_per_class=30, test_per_class=20, seed=0))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=0)


@pytest.fixture(scope="session")
def pretrained_tiny(tmp_path_factory) -> Path:
    """The tiny CLIP warmed up on separate phantoms (`vptlib model tiny --pretrain-epochs`).

    `make test` builds it once into models/tiny-clip and points VPTLIB_TINY_MODEL at it.
    """
    from vptlib.study.pretrain import pretrain_tiny

    ready = os.environ.get("VPTLIB_TINY_MODEL")
    if ready and (Path(ready) / "model.safetensors").is_file():
        return Path(ready)
    return pretrain_tiny(tmp_path_factory.mktemp("tiny-pretrained"), progress=False)


def pytest_collection_modifyitems(config, items) -> None:
    """The files marked ``slow`` (each builds a whole book) first, the rest in collection order.

    ``make test`` hands files to its two workers in this order (``--dist loadfile
    --no-loadscope-reorder``): the two book builds start at once, one on each worker, and the
    short files fill in around them. xdist's default order (most tests first) ran the
    one-test dry run of the full profile last, eight minutes alone on one worker."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
