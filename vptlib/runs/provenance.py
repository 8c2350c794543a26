"""What identifies a run and where it ran: configuration and code hashes, git commit,
library versions, the device."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vptlib import PACKAGE, REPO, __version__


def config_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]


def git_commit() -> str:
    """HEAD of the repository vptlib is imported from, with ``-dirty`` for local changes."""
    root = REPO
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import numpy
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "vptlib": __version__,
        "platform": platform.platform(),
    }


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def settings_hash(cfg) -> str:
    """What a run's settings are, apart from its seed: runs that differ only in seed share it."""
    identity = {k: v for k, v in cfg.identity().items() if k not in ("seed", "profile")}
    return config_hash(identity)


# The code that decides a run's numbers: what it reads, the model, the method, and how it
# trains and evaluates. The report, the bench, the study's orchestration and the command
# line are not part of a run's identity, so editing a figure retrains nothing. The
# Makefile's RUN_SRC lists the same files (a test keeps the two equal).
IDENTITY_PACKAGES = ("data", "models", "methods", "runs")
IDENTITY_MODULES = ("selection.py",)  # top-level modules that decide a number


def identity_files() -> list[Path]:
    """The source files :func:`code_hash` hashes, relative to the ``vptlib`` folder."""
    files = [Path(m) for m in IDENTITY_MODULES]
    for pkg in IDENTITY_PACKAGES:
        files += [p.relative_to(PACKAGE) for p in (PACKAGE / pkg).rglob("*.py")]
    return sorted(files)


def code_hash() -> str:
    """Hash of the code that decides a run's numbers: a finished run is reused only by that code."""
    h = hashlib.sha256()
    for rel in identity_files():
        h.update(rel.as_posix().encode() + (PACKAGE / rel).read_bytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run, computed once per run: the hash of its
    configuration (seed included) and the hash of the code that decides its numbers."""

    config_hash: str
    code_hash: str

    @classmethod
    def of(cls, cfg: Any) -> RunIdentity:
        return cls(config_hash(cfg.identity()), code_hash())
