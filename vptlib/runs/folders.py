"""Which run a configuration gets: a finished one to reuse, an unfinished one to resume, or
a new run directory; and the check that a recorded run used the model and data given now.

Runs live in ``<out>/<profile>/<method>/<run-id>/`` and are found by their configuration's
hash (:mod:`vptlib.runs.records`). A reused grid point that has not looked at test yet is
completed with its test evaluation here (:func:`vptlib.runs.record_writer.add_test`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from vptlib import locks
from vptlib.data.manifest import manifest_hash
from vptlib.errors import UserError
from vptlib.models.backbone import model_signature, shared_clip

from . import record_writer, records
from .config import RunConfig
from .parallel import Dist
from .provenance import RunIdentity


def method_root(cfg: RunConfig) -> Path:
    return records.method_folder(cfg.out, cfg.profile, cfg.method)


def reuse(cfg: RunConfig, identity: RunIdentity, given: ModelAndData, device: torch.device, dist: Dist) -> Path | None:
    """The folder of the newest finished run of this configuration by this code, completed
    with its test evaluation when ``cfg`` asks for it; None when there is none."""
    found = records.find_run(method_root(cfg), identity.config_hash, finished=True, code=identity.code_hash)
    done = dist.broadcast(found if dist.main else None)
    if done is None:
        return None
    given.check(done, "reuse")
    if cfg.evaluate_test and not _test_evaluated(done):
        if dist.main:
            with locks.exclusive(done, f"run {done}", wait=True):
                if not _test_evaluated(done):  # another process may have done it meanwhile
                    record_writer.add_test(done, cfg, clip=given.clip(), device=device)
        dist.barrier()
    return done


def _test_evaluated(run_dir: Path) -> bool:
    return json.loads((run_dir / records.METRICS).read_text()).get("test_evaluated", True)


def claim_run_dir(
    cfg: RunConfig, identity: RunIdentity, given: ModelAndData, resume: bool, dist: Dist, progress: bool
) -> Path:
    """The unfinished run to resume, or a new run directory; the same on every process."""
    run_dir = None
    if dist.main:
        root, chash = method_root(cfg), identity.config_hash
        run_dir = records.find_resumable(root, chash) if resume else None
        if run_dir is not None:
            given.check(run_dir, "resume")
        elif resume and progress:
            print(f"no unfinished run with this configuration under {root}: starting a new one")
        run_dir = run_dir or records.new_run_dir(root, chash)
    return Path(dist.broadcast(str(run_dir) if run_dir else None))


class ModelAndData:
    """The model and data a run is given now, to compare with what a recorded run used.

    The model's fingerprint needs its weights loaded; a local folder whose weight files
    have the size and modification time recorded by the run (``model_signature``) is
    taken as unchanged without loading, so reusing a finished run stays cheap.
    """

    def __init__(self, model: str, data: str, revision: str | None = None):
        self.model, self.revision, self.signature = model, revision, model_signature(model)
        self.manifest_hash = manifest_hash(data)

    def clip(self):
        return shared_clip(self.model, self.revision)[0]

    def fingerprint(self) -> str:
        return shared_clip(self.model, self.revision)[1]

    def check(self, run_dir: Path, action: str) -> None:
        """Refuse to resume or reuse a run whose model or data are not the ones given now."""
        try:
            then = json.loads((run_dir / records.CONFIG).read_text())
        except (OSError, ValueError):
            raise UserError(f"cannot {action} {run_dir}: its config.json is unreadable; start a new run") from None

        def refuse(what: str, key: str, old, new) -> UserError:
            return UserError(
                f"cannot {action} {run_dir}: {what} changed since it was made ({key} {old} -> {new}); "
                f"start a new run (without --resume), or restore the original model and data"
            )

        if then.get("manifest_hash") != self.manifest_hash:
            raise refuse("the data (manifest.csv)", "manifest_hash", then.get("manifest_hash"), self.manifest_hash)
        if self.signature is not None and then.get("model_signature") == self.signature:
            return
        if then.get("model_fingerprint") != self.fingerprint():
            raise refuse("the model's weights", "model_fingerprint", then.get("model_fingerprint"), self.fingerprint())


def discard_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but its lock: a run that failed before it
    recorded anything (its model or data would not load) leaves no empty folder behind."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {locks.LOCK_NAME}:
            shutil.rmtree(run_dir, ignore_errors=True)
    except OSError:
        pass
