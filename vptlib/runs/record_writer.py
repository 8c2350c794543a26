"""Writing a run's record: ``config.json`` when it starts, the result files when it ends.

Reading records, run ids and the test ledger live in :mod:`vptlib.runs.records`; this module
writes what the engine produced. Every file is written atomically, by the main process.
A grid point trained with ``evaluate_test=False`` records no test metrics; when it is
chosen, :func:`add_test` evaluates its saved checkpoint on test and completes the record,
so it becomes the final run of its seed without training again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from vptlib import atomic, tensorfile
from vptlib.data.dataset import Data, Preprocess, load_data
from vptlib.data.manifest import read_manifest
from vptlib.methods import Classifier, count_parameters
from vptlib.models.backbone import model_signature

from . import conformal, flops, ledger, provenance, records
from .config import RunConfig
from .context import RunContext
from .evaluation import accuracy, evaluate
from .metrics import classification_report
from .staging import StagedRun


def write_config(
    ctx: RunContext, model: Classifier, data: Data, prep: Preprocess, identity: dict[str, Any], attention: str | None
) -> None:
    """``config.json``: everything that determined the run, written once when it starts.

    ``identity`` holds ``config_hash``, ``code_hash``, ``model_fingerprint`` and ``model_source``
    (repo, revision, resolved commit, each weights file's sha256: :meth:`vptlib.models.hub.ModelSource.record`).
    """
    cfg, run_dir = ctx.cfg, ctx.run_dir
    trainable_n, total_n = count_parameters(model)
    atomic.write_json(
        run_dir / records.CONFIG,
        {
            **dataclasses.asdict(cfg),
            **identity,
            "run_id": run_dir.name,
            "method_options": model.options,
            "classes": list(data.classes),
            "model_signature": model_signature(cfg.model),
            "manifest_hash": data.manifest_hash,
            "attention": attention,
            "preprocess": dataclasses.asdict(prep),
            "git_commit": provenance.git_commit(),
            "versions": provenance.versions(),
            "device": provenance.device_description(ctx.device),
            "processes": ctx.dist.world,
            "text_prompts": model.text_prompts,
            "trains": model.describe(),
            "trainable_params": trainable_n,
            "total_params": total_n,
            "splits": {s: len(getattr(data, s)) for s in ("train", "val", "test")},
            "support_set": write_support(run_dir, data),
        },
    )


def support_rows(data: Data) -> pd.DataFrame:
    """The training and validation images this run used (a few-shot run: its seed's subset),
    each with its class and the sha256 ``vptlib data prepare`` recorded for it."""
    sha = dict(zip(*(read_manifest(data.root, include_excluded=True)[k] for k in ("path", "sha256")), strict=True))
    rows = [
        {"split": split, "path": path, "class": data.classes[int(y)], "sha256": sha[path]}
        for split in ("train", "val")
        for path, y in zip(getattr(data, split).paths, getattr(data, split).labels, strict=True)
    ]
    return pd.DataFrame(rows, columns=["split", "path", "class", "sha256"])


def write_support(run_dir: Path, data: Data) -> dict[str, Any]:
    """Write :data:`~vptlib.runs.records.SUPPORT`; returns what config.json says of it."""
    text = support_rows(data).to_csv(index=False).encode()
    atomic.write_bytes(run_dir / records.SUPPORT, text)
    return {
        "file": records.SUPPORT,
        "sha256": hashlib.sha256(text).hexdigest(),
        "train": len(data.train),
        "val": len(data.val),
    }


@dataclass
class Outcome:
    """What training produced, for :func:`write_result`."""

    history: list[dict[str, float]]
    best_epoch: int
    extra: dict[str, Any]  # method-specific metrics (the chosen WiSE-FT alpha, the probe's C, ...)
    started: float  # time.perf_counter() when the run began
    test_looks: list[tuple[float, str]] = dataclasses.field(default_factory=list)  # finalize's, for the ledger


def _rows(split: str, data: Data, labels: np.ndarray, probs: np.ndarray) -> list[dict[str, Any]]:
    return [
        {
            "split": split,
            "path": path,
            "true": data.classes[y],
            "pred": data.classes[int(p.argmax())],
            **{f"prob_{c}": float(p[i]) for i, c in enumerate(data.classes)},
        }
        for path, y, p in zip(getattr(data, split).paths, labels, probs, strict=True)
    ]


def write_result(ctx: RunContext, model: Classifier, inputs: StagedRun, data: Data, outcome: Outcome) -> dict[str, Any]:
    """Evaluate the selected checkpoint and write weights, predictions, history and metrics.

    Returns the metrics (every process computes them; only the main process writes).
    """
    cfg, run_dir, device, processes, main = ctx.cfg, ctx.run_dir, ctx.device, ctx.dist.world, ctx.dist.main
    results, rows, losses, scored = {}, [], {}, {}
    for split in ("val", "test") if cfg.evaluate_test else ("val",):
        losses[split], probs = evaluate(inputs, split, cfg)
        labels = inputs.splits[split][1].cpu().numpy()
        if len(labels):
            results[split] = classification_report(labels, probs, data.classes)
            scored[split] = (probs, labels)
        rows += _rows(split, data, labels, probs)
    if "test" in scored:  # prediction sets calibrated and scored on disjoint halves of test (chose nothing)
        results["test"]["conformal"] = conformal.report(*scored["test"])
    _, train_probs = evaluate(inputs, "train", cfg)
    hist = pd.DataFrame(outcome.history)
    trainable_n, total_n = count_parameters(model)
    metrics = {
        "method": cfg.method,
        "test": results.get("test"),
        "val": results.get("val"),
        "test_evaluated": cfg.evaluate_test,
        "val_loss": losses["val"],
        "train_accuracy": accuracy(train_probs, inputs.splits["train"][1]),
        "best_epoch": outcome.best_epoch,
        "selected_by": "validation accuracy (ties: lower validation loss)" if cfg.select == "val" else "the last epoch",
        "epochs_run": len(hist),
        "stopped_early": bool(len(hist) < cfg.epochs),
        "trainable_params": trainable_n,
        "total_params": total_n,
        "checkpoint_bytes": 0,
        "seconds_per_epoch": float(hist["train_seconds"].mean()) if len(hist) else 0.0,
        "images_per_second": float(hist["images_per_s"].mean()) if len(hist) else 0.0,
        "precision": cfg.precision,
        "device": provenance.device_description(device),
        "processes": processes,
        "train_images": len(inputs.splits["train"][1]),
        **outcome.extra,
    }
    metrics["flops_per_image"] = flops.recorded(inputs, cfg.precision)  # on every process: see recorded
    if main:  # the record is written once, by one process
        trained = model.trainable_state()
        metrics["checkpoint_bytes"] = records.save_weights(run_dir / records.WEIGHTS, trained)
        metrics["weights_sha256"] = tensorfile.digest(trained)  # predict and add_test check it on load
        if model.peft_export is not None:
            save_adapter(run_dir, model.peft_export)
        atomic.write_bytes(run_dir / records.PREDICTIONS, pd.DataFrame(rows).to_csv(index=False).encode())
        if len(hist):
            atomic.write_bytes(run_dir / records.HISTORY, hist.to_csv(index=False).encode())
        metrics["seconds"] = _cost(outcome, hist, inputs)
        if results.get("test"):  # counted before metrics.json: a kill in between leaves the look counted
            curve = [
                (float(r["test_acc"]), f"epoch {int(r['epoch'])} curve (plot only)")
                for r in outcome.history
                if not np.isnan(r.get("test_acc", float("nan")))
            ]
            ledger.log_test_look(run_dir, cfg, results["test"]["accuracy"], curve + outcome.test_looks)
        atomic.write_json(run_dir / records.METRICS, metrics)
        (run_dir / records.STATE).unlink(missing_ok=True)
    return metrics


def _cost(outcome: Outcome, hist: pd.DataFrame, inputs: StagedRun) -> dict[str, float]:
    """Where the run's wall time went; ``overhead`` is everything but training and evaluation
    (loading, building, staging, checkpoints, writing the record)."""
    total = time.perf_counter() - outcome.started
    training = (float(hist["train_seconds"].sum()) if len(hist) else 0.0) + outcome.extra.get("fit_seconds", 0.0)
    return {
        "total": total,
        "training": training,
        "evaluation": inputs.eval_seconds,
        "overhead": max(0.0, total - training - inputs.eval_seconds),
    }


def add_test(run_dir: Path, cfg: RunConfig, clip: Any = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Evaluate a finished validation-only run on test, as the engine would have, and complete its record.

    The saved checkpoint goes through the run's own predictor (its precision, preprocessing
    and batch size; :func:`vptlib.runs.predict.load_predictor`), which reproduces the engine's
    probabilities, so the completed record equals one written by an ordinary run.
    """
    from .predict import load_predictor

    metrics = json.loads((run_dir / records.METRICS).read_text())
    predictor = load_predictor(run_dir, clip=clip, device=device)
    data = load_data(cfg.data, predictor.prep)  # the test split: whole, also for a few-shot run
    probs = predictor.probabilities(data.test.pixels)
    labels = data.test.labels.numpy()
    old = pd.read_csv(run_dir / records.PREDICTIONS, keep_default_na=False)
    old = old[old["split"] != "test"]  # test rows of an earlier attempt killed before metrics.json
    if len(labels):
        metrics["test"] = classification_report(labels, probs, data.classes)
        metrics["test"]["conformal"] = conformal.report(probs, labels)  # as in write_result
    metrics["test_evaluated"] = True
    rows = pd.concat([old, pd.DataFrame(_rows("test", data, labels, probs))], ignore_index=True)
    atomic.write_bytes(run_dir / records.PREDICTIONS, rows.to_csv(index=False).encode())
    if metrics["test"]:  # counted before the record says so: a kill in between leaves the look counted
        ledger.log_test_look(run_dir, cfg, metrics["test"]["accuracy"])
    atomic.write_json(run_dir / records.METRICS, metrics)
    return metrics


ADAPTER = "adapter"


def save_adapter(run_dir: Path, export: Any) -> Path:
    """Write a LoRA method's adapters as PEFT saves them, in ``run_dir/adapter/``:
    ``adapter_config.json`` (``base_model_name_or_path`` and ``revision``: the run's model
    and the commit it resolved to, from ``config.json``) and
    ``adapter_model.safetensors`` (keys ``base_model.model.<path>.lora_A.weight``, with
    :func:`weights_metadata`). Then, with ``export.base`` the transformers class::

        PeftModel.from_pretrained(CLIPModel.from_pretrained(model), run_dir / "adapter")

    rebuilds the adapted encoder(s) the run trained (``tests/runs/test_adapters.py``).
    """
    import copy

    from peft import get_peft_model_state_dict

    run = json.loads((run_dir / records.CONFIG).read_text())
    source = run.get("model_source") or {}
    config = copy.deepcopy(export.config)
    config.base_model_name_or_path = source.get("repo") or run["model"]
    config.revision = source.get("commit") or run.get("revision")
    config.inference_mode = True
    tensors = {
        f"base_model.model.{export.prefix}{k}": v.detach().to("cpu").contiguous()
        for k, v in get_peft_model_state_dict(export.module).items()
    }
    meta = {"format": "pt", **records.weights_metadata(run_dir), "base_class": export.base}
    with atomic.atomic_dir(run_dir / ADAPTER) as tmp:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata=meta)
    return run_dir / ADAPTER
