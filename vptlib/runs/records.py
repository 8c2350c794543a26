"""Run records: ``runs/<profile>/<method>/<run-id>/``.

=====================  ==========================================================
``config.json``        every parameter, model id + fingerprint, manifest hash, git
                       commit, library versions, device, prompts (text methods)
``history.csv``        one row per epoch (train/val/test loss and accuracy, time)
``state.pt``           resume state after the last completed epoch (tensors only,
                       loaded with ``weights_only=True``); deleted when the run ends
``trainable.safetensors``  only the trained tensors of the selected epoch
``adapter/``           LoRA methods: the same adapters in PEFT's format, for
                       ``PeftModel.from_pretrained`` (:func:`~vptlib.runs.record_writer.save_adapter`)
``predictions.csv``    val and test predictions with class probabilities
``metrics.json``       written last: its presence marks a finished run
=====================  ==========================================================

``runs/<profile>/<method>/group.json`` names the runs (one per seed) that the
results page aggregates for that method; it is rewritten when the page reruns.

Every file is written atomically. A run id is ``<UTC time to the microsecond>-<config
hash>``: unique, so a rerun never overwrites an earlier record, and sorting ids sorts
runs by creation, also within one second and when the clock steps back (a new id is
always after the newest one in its folder). The config hash never decides the order.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from vptlib import atomic
from vptlib.errors import UserError
from vptlib.tensorfile import digest, read_weights

CONFIG, METRICS, HISTORY, STATE, WEIGHTS, PREDICTIONS, GROUP = (
    "config.json",
    "metrics.json",
    "history.csv",
    "state.pt",
    "trainable.safetensors",
    "predictions.csv",
    "group.json",
)
# The runs of a notebook executed outside the book's build (plain papermill, a notebook
# opened by hand): named here, never in GROUP, so the book never shows what it did not
# execute (vptlib.study.tuning.run_method).
GROUP_OUTSIDE = "group-outside-book.json"
# Written by a run that diverged: its reason. The run is deterministic (seeded, resumed at
# the same step), so resuming it would diverge again; it is reported failed at once instead.
DIVERGED = "diverged.json"
# The exact images a run trained and selected on: one row per training and validation image
# (its split, path in the data folder, class and sha256), so one seed's support set can be
# rebuilt from the files alone, without vptlib; config.json holds the file's sha256.
SUPPORT = "support.csv"


def profile_folder(runs: str | Path, profile: str) -> Path:
    """``<runs>/<profile>/``: a build's runs, its test ledger and its sweeps."""
    return Path(runs) / profile


def method_folder(runs: str | Path, profile: str, method: str) -> Path:
    """``<runs>/<profile>/<method>/``: one method's run folders, its ``group.json`` and tuning grid."""
    return profile_folder(runs, profile) / method


_STAMP = "%Y%m%d-%H%M%S-%f"
# This version's ids (time to the microsecond) and earlier ones (to the second, a tie
# counter after the hash): both sort by creation with :func:`run_order`.
_RUN_ID = re.compile(r"^(\d{8}-\d{6})(?:-(\d{6}))?-[0-9a-f]{8}(?:-(\d+))?$")


def run_order(path: Path) -> tuple[str, int, int]:
    """Sort key of a run folder: creation time, then the tie counter; never the config hash."""
    m = _RUN_ID.match(path.name)
    if not m:
        return ("", -1, -1)
    return (m.group(1), int(m.group(2) or -1), int(m.group(3) or 0))


def run_dirs(root: Path) -> list[Path]:
    """Run folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _RUN_ID.match(p.name)), key=run_order)


def new_run_dir(root: Path, chash: str) -> Path:
    """A new, empty run folder whose id sorts after every run already in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    when = datetime.now(timezone.utc).replace(tzinfo=None)
    existing = run_dirs(root)
    if existing:
        sec, micro, _ = run_order(existing[-1])
        newest = datetime.strptime(f"{sec}-{max(micro, 0):06d}", _STAMP)
        when = max(when, newest + timedelta(microseconds=1))
    for _ in range(10_000):
        path = root / f"{when.strftime(_STAMP)}-{chash}"
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:  # another process took this microsecond: take the next one
            when += timedelta(microseconds=1)
    raise RuntimeError(f"could not allocate a run directory under {root}")


def find_run(root: Path, chash: str, finished: bool, code: str | None = None) -> Path | None:
    """The newest run with this configuration hash: unfinished (to resume) or finished (to reuse).

    A finished run is reused only when ``code`` matches the code hash it was made with.
    """
    for path in reversed(run_dirs(root)):
        cfg = path / CONFIG
        if not cfg.is_file() or (path / METRICS).exists() != finished:
            continue
        try:
            meta = json.loads(cfg.read_text())
        except json.JSONDecodeError:
            continue
        if meta.get("config_hash") == chash and (code is None or meta.get("code_hash") == code):
            return path
    return None


def find_resumable(root: Path, chash: str) -> Path | None:
    """The newest unfinished run with the same configuration hash, if any."""
    return find_run(root, chash, finished=False)


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic.atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: Path) -> dict[str, Any]:
    """The resume state; a damaged file is a :class:`UserError`, never a traceback or a pickle."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, empty, random bytes, or objects weights_only refuses
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path} is damaged and cannot be resumed ({why}); delete it to restart this run from "
            f"its first epoch, or start a new run without --resume"
        ) from None
    keys = {"epoch", "trainable", "optimizer", "scheduler", "history", "stale", "best", "best_state"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise UserError(f"{path} is not a vptlib resume state; delete it to restart this run from its first epoch")
    return state


# What a checkpoint says about itself in its safetensors header, read from its run's
# config.json: a trainable.safetensors copied away from its folder still names its run.
WEIGHTS_METADATA = ("method", "classes", "model", "config_hash", "code_hash", "vptlib_version")


def weights_metadata(run_dir: Path) -> dict[str, str]:
    """The :data:`WEIGHTS_METADATA` of ``run_dir``'s config (strings, as safetensors stores them)."""
    from vptlib import __version__

    cfg = json.loads((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).is_file() else {}
    cfg = {**cfg, "vptlib_version": __version__, "run_id": run_dir.name}
    keep = [k for k in (*WEIGHTS_METADATA, "run_id") if cfg.get(k) is not None]
    return {k: cfg[k] if isinstance(cfg[k], str) else json.dumps(cfg[k]) for k in keep}


def save_weights(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    """Write a run's trainable tensors, with :func:`weights_metadata` of the folder they are in."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = weights_metadata(path.parent)
    atomic.atomic_write(path, lambda p: save_file(cpu, str(p), metadata=meta))
    return path.stat().st_size


# What every reader of a finished run needs from its config.json.
CONFIG_KEYS = ("method", "classes", "model", "method_options", "preprocess", "precision", "batch_size")


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.json``, checked before anything uses it: a record written by another
    version (a method renamed, an option removed, a key missing, a file that is not JSON) is
    one line naming the file and the vptlib version that wrote it, never a traceback."""
    from vptlib import __version__
    from vptlib.data.dataset import Preprocess
    from vptlib.methods import METHODS, option_names

    path = Path(run_dir) / CONFIG
    try:
        cfg = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror}); is {run_dir} a finished run?") from None
    except ValueError:
        cfg = None
    wrote = (
        cfg.get("versions", {}).get("vptlib")
        if isinstance(cfg, dict) and isinstance(cfg.get("versions"), dict)
        else None
    )

    def refuse(why: str) -> UserError:
        return UserError(
            f"{path} {why}; it was written by vptlib {wrote or '(version unknown)'}, this is vptlib {__version__}: "
            f"rerun that run with this version, or read it with the version that wrote it"
        )

    if not isinstance(cfg, dict):
        raise refuse("is not a JSON object")
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise refuse(f"has no {', '.join(missing)}")
    method = cfg["method"]
    if method not in METHODS:
        raise refuse(f"names the method {method!r}, which this version does not have")
    if not isinstance(cfg["method_options"], dict) or not isinstance(cfg["preprocess"], dict):
        raise refuse("has method_options or preprocess that are not JSON objects")
    unknown = sorted(set(cfg["method_options"]) - set(option_names(method)))
    if unknown:
        raise refuse(f"sets {method} option(s) {', '.join(unknown)} that this version does not have")
    fields = {f.name for f in dataclasses.fields(Preprocess)}
    if set(cfg["preprocess"]) != fields:
        raise refuse(f"has a preprocess record with other keys than {', '.join(sorted(fields))}")
    return cfg


def read_run(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    out = {"dir": run_dir, "config": read_config(run_dir)}
    if (run_dir / METRICS).is_file():
        out["metrics"] = json.loads((run_dir / METRICS).read_text())
    return out


def load_run(run_dir: str | Path, clip=None, device: str | torch.device = "cpu"):
    """Rebuild a finished run's classifier with its trained tensors, in fp32.

    ``clip`` defaults to loading ``config["model"]``; pass an already loaded bundle to
    save time. Returns ``(classifier, config)``. To predict as the run did (its
    precision, preprocessing and class names), use :func:`vptlib.runs.predict.load_predictor`.
    """
    from vptlib.methods import build
    from vptlib.models.backbone import load_clip

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    clip = clip or load_clip(cfg["model"], revision=cfg.get("revision"))
    options = dict(cfg["method_options"])
    for key in ("class_names", "templates"):
        if options.get(key) is not None:
            options[key] = tuple(options[key])
    model = build(cfg["method"], clip, len(cfg["classes"]), **options)
    redo = f"the run cannot be used: delete {run_dir} and rerun it"
    weights = read_weights(run_dir / WEIGHTS, redo)
    expected = model.trainable_state()
    # A tensor sized by the run's data (Tip-Adapter-F's cache: one key per training image) takes
    # the checkpoint's shape as it loads; every other shape must be the one the method builds.
    sized = set(getattr(model, "data_sized", ()))
    wrong = sorted(k for k in set(weights) | set(expected) if k not in weights or k not in expected)
    wrong += sorted(k for k in set(weights) & set(expected) if weights[k].shape != expected[k].shape and k not in sized)
    if wrong:
        raise UserError(
            f"{run_dir / WEIGHTS} does not fit {run_dir / CONFIG} ({cfg['method']}'s trainable tensors differ "
            f"at {', '.join(wrong[:3])}): one of the two was edited or replaced; {redo}"
        )
    recorded = read_run(run_dir).get("metrics", {}).get("weights_sha256")
    if recorded is not None and digest(weights) != recorded:
        raise UserError(
            f"{run_dir / WEIGHTS} is not the file this run wrote (its tensors' sha256 differs from the one in "
            f"{run_dir / METRICS}): it was replaced or edited; {redo}"
        )
    model.load_state_dict(weights, strict=False)
    return model.to(device).eval(), cfg


@dataclass
class RunResult:
    """A finished run: its folder, metrics and history (and its classifier, when kept)."""

    run_dir: Path
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: Any = None  # the selected checkpoint, when run(keep_model=True)


def read_history(run_dir: Path) -> pd.DataFrame:
    path = run_dir / HISTORY
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()
