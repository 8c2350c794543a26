"""A finished run as a predictor: ``vptlib predict`` and :func:`load_predictor`.

A :class:`Predictor` carries everything that determined the run's own predictions:
the trained tensors, the class names, the preprocessing, the precision the run
resolved to and its evaluation batch size. It evaluates with the same function the
engine uses (:func:`logits_in_batches`), so on the run's own test images it
reproduces ``predictions.csv``: the same classes, and the same probabilities.

New images go through the same decoding as ``vptlib data prepare`` (CMYK, 16-bit,
palette, alpha and EXIF rotation are converted) and the same resize and crop as
training. Unreadable files are listed with their reason, never raised.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vptlib.data.dataset import Preprocess, normalize
from vptlib.data.images import IMAGE_SUFFIXES, BadImage, is_hidden, load_rgb
from vptlib.errors import UserError
from vptlib.paths import display

from .devices import cast_frozen, pick_device, set_attention
from .evaluation import logits_in_batches


@dataclass
class Predictor:
    """A trained classifier with what it needs to predict as its run did."""

    model: torch.nn.Module
    classes: tuple[str, ...]
    prep: Preprocess
    precision: str
    device: torch.device
    batch_size: int
    config: dict[str, Any]

    def probabilities(self, pixels: torch.Tensor) -> np.ndarray:
        """Class probabilities ``(N, C)`` for uint8 pixels ``(N, 3, crop, crop)`` as :meth:`Preprocess.to_uint8` makes."""
        self.model.eval()

        def forward(x: torch.Tensor) -> torch.Tensor:
            return self.model(normalize(x.to(self.device), self.prep))

        chunks = [
            torch.softmax(z, -1).cpu()
            for z in logits_in_batches(forward, pixels, self.batch_size, self.device, self.precision)
        ]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, len(self.classes)))

    def predict_files(self, paths: Iterable[str | Path]) -> pd.DataFrame:
        """One row per file: ``path``, ``pred``, ``prob_<class>``..., and ``error`` (empty when read).

        Images are decoded and classified one batch at a time, in the given order.
        """
        rows: list[dict[str, Any]] = []
        batch: list[tuple[str, np.ndarray]] = []

        def flush() -> None:
            if not batch:
                return
            probs = self.probabilities(torch.from_numpy(np.stack([a for _, a in batch])))
            for (path, _), p in zip(batch, probs, strict=True):
                rows.append(
                    {
                        "path": path,
                        "pred": self.classes[int(p.argmax())],
                        **{f"prob_{c}": float(p[i]) for i, c in enumerate(self.classes)},
                        "error": "",
                    }
                )
            batch.clear()

        for path in paths:
            try:
                img, _, _ = load_rgb(path)
            except BadImage as exc:
                rows.append({"path": str(path), "pred": "", "error": str(exc)})
                continue
            batch.append((str(path), self.prep.to_uint8(img)))
            if len(batch) == self.batch_size:
                flush()
        flush()
        columns = ["path", "pred", *[f"prob_{c}" for c in self.classes], "error"]
        return pd.DataFrame(rows, columns=columns)


def load_predictor(
    run_dir: str | Path, clip: Any = None, device: str | torch.device = "cpu", precision: str | None = None
) -> Predictor:
    """Rebuild a finished run as a :class:`Predictor`.

    ``precision`` defaults to the one the run recorded (resolved: fp32, bf16 or fp16);
    another value gives other probabilities than ``predictions.csv``.
    """
    from . import records

    dev = device if isinstance(device, torch.device) else pick_device(device)  # before any weight moves
    model, cfg = records.load_run(run_dir, clip=clip, device=dev)
    prep = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["preprocess"].items()})
    precision = precision or cfg["precision"]
    cast_frozen(model, precision)  # as the engine did: the same logits under autocast
    set_attention(model, cfg.get("attention") or "sdpa")  # the kernel the run used
    return Predictor(model, tuple(cfg["classes"]), prep, precision, dev, int(cfg["batch_size"]), cfg)


def expand_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to classify, in order: each file as given, each folder's images sorted by path.

    Returns ``(files, skipped)``; ``skipped`` lists ``(path, reason)`` for what is not used.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file() or q.is_symlink()):
                rel = f.relative_to(p)
                if f.is_symlink() and not f.exists():
                    skipped.append((str(f), f"broken link to {display(os.readlink(f))}"))
                elif any(is_hidden(Path(part)) for part in rel.parts):
                    skipped.append((str(f), "hidden file"))
                elif f.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append((str(f), f"not an image extension ({f.suffix or 'none'})"))
                else:
                    files.append(f)
        elif p.exists():
            files.append(p)
        elif p.is_symlink():
            skipped.append((str(p), f"broken link to {display(os.readlink(p))}"))
        else:
            skipped.append((str(p), "no such file or folder"))
    return files, skipped


def predict(
    run_dir: str | Path,
    inputs: Iterable[str | Path],
    device: str = "cpu",
    progress: bool = False,
    model: str | None = None,
) -> pd.DataFrame:
    """Classify ``inputs`` (files or folders) with a finished run; one row per file seen.

    ``model`` is where the run's base model is now (a moved folder, or a copy); it must
    hold the same weights the run recorded (its fingerprint), else nothing is predicted.
    """
    from . import records

    run_dir = Path(run_dir)
    if not (run_dir / records.METRICS).is_file():
        raise UserError(_not_a_run(run_dir))
    if not isinstance(device, torch.device):
        pick_device(device)  # an unavailable device stops here, before the model is loaded
    files, skipped = expand_inputs(inputs)
    if not files and not skipped:
        raise UserError("no images given: pass image files or folders")
    clip = _same_model(run_dir, model)
    predictor = load_predictor(run_dir, clip=clip, device=device)
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc="predict", unit="img", leave=False)
    table = predictor.predict_files(files)
    if skipped:
        table = pd.concat(
            [table, pd.DataFrame([{"path": p, "pred": "", "error": why} for p, why in skipped])], ignore_index=True
        )
    table["path"] = table["path"].map(display)  # a Latin-1 file name is shown as \xNN, and the CSV stays UTF-8
    return table


def _same_model(run_dir: Path, model: str | None):
    """The run's base model, loaded from ``model`` (a moved folder, a copy) or from where the run
    recorded it, and refused unless its weights are those the run was trained from: a model
    folder rebuilt since would otherwise predict with other weights under the run's name."""
    from vptlib.models.backbone import fingerprint, load_clip, model_signature

    from . import records

    cfg = records.read_config(run_dir)
    where = model or cfg["model"]
    clip = load_clip(where, revision=None if model else cfg.get("revision"))
    recorded = cfg.get("model_fingerprint")
    signature = model_signature(where)
    if signature is not None and signature == cfg.get("model_signature"):
        return clip  # the same files, unchanged since the run (size and modification time)
    now = fingerprint(clip.model)
    if now != recorded:
        given = f"--model {model}" if model else f"the run's model {where}"
        raise UserError(
            f"{given} is not the model {run_dir.name} was trained from (weights fingerprint {now}, the run "
            f"recorded {recorded}): its folder was rebuilt or replaced; pass --model with the original weights"
        )
    return clip


def describe(table: pd.DataFrame) -> str:
    """The table as printed by ``vptlib predict``: probabilities to 3 decimals."""
    shown = table.copy()
    for c in shown.columns:
        if c.startswith("prob_"):
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return shown.fillna("").to_string(index=False)


def _not_a_run(run_dir: Path, shown: int = 10) -> str:
    """Why ``run_dir`` cannot predict, and, for a method's folder, the finished runs inside it
    (the current group's marked), newest first."""
    from . import records

    if (run_dir / records.CONFIG).is_file():
        return f"{run_dir} is not a finished run (it is unfinished: resume it with --resume)"
    done = [d for d in reversed(records.run_dirs(run_dir)) if (d / records.METRICS).is_file()]
    if not done:
        return f"{run_dir} is not a finished run (no run here); pass runs/<profile>/<method>/<run-id>"
    group = run_dir / records.GROUP
    current = set(json.loads(group.read_text()).get("runs", [])) if group.is_file() else set()
    lines = [f"  {run_dir / d.name}{'  (in the results table)' if d.name in current else ''}" for d in done[:shown]]
    more = [f"  ... and {len(done) - shown} older"] if len(done) > shown else []
    return "\n".join([f"{run_dir} is a method's folder, not a run; pass one of its finished runs:", *lines, *more])
