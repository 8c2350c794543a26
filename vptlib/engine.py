"""Training and evaluation: ``vptlib run`` and :func:`run`, its Python twin.

One run trains one method on one prepared data folder and writes a run record
(:mod:`vptlib.records`). The rules that keep it honest:

* the epoch is **selected on validation** accuracy (ties: lower validation loss);
  test metrics are computed on that checkpoint. Per-epoch test accuracy is recorded
  for plotting (``test_curves``) and never used for any choice;
* every epoch's shuffling, augmentation and dropout draw from generators seeded by
  ``(seed, epoch)``, so a run killed mid-epoch and resumed with ``resume=True``
  finishes with the same metrics as an uninterrupted one (on the CPU);
* a non-finite loss before training is refused; one during training stops the run
  with a message naming the epoch and step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import atomic, records
from .augment import Augment
from .backbone import DEFAULT_MODEL, fingerprint, load_clip
from .dataset import Data, Preprocess, load_data, normalize
from .devices import autocast, generator, pick_device, seed_everything
from .errors import TrainingDiverged, UserError
from .methods import METHODS, Classifier, build, count_parameters, option_names, spec
from .metrics import classification_report


@dataclass
class RunConfig:
    """Everything that determines a run. ``None`` means "the method's default"."""

    method: str
    data: str  # a folder written by `vptlib data prepare`
    model: str = DEFAULT_MODEL  # hub id or local folder
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None  # head / prompt learning rate (the backbone's is scaled, see `full`)
    weight_decay: float | None = None
    optimizer: str | None = None  # "sgd" (momentum 0.9) or "adamw"
    schedule: str = "cosine"  # "cosine" or "constant", stepped per batch
    warmup: int = 0  # epochs of linear warm-up
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    early_stopping: int = 0  # patience in epochs without a better val accuracy; 0 disables
    augment: bool = True  # batch augmentation for methods trained on images
    test_curves: bool = True  # evaluate test each epoch, for plots only
    profile: str = "default"  # runs/<profile>/...
    out: str = "runs"
    options: dict[str, Any] = field(default_factory=dict)  # method options, e.g. prompt_tokens

    def resolved(self) -> RunConfig:
        d = spec(self.method).defaults if self.method in METHODS else None
        if d is None:
            return self
        return dataclasses.replace(
            self,
            epochs=d.epochs if self.epochs is None else self.epochs,
            lr=d.lr if self.lr is None else self.lr,
            weight_decay=d.weight_decay if self.weight_decay is None else self.weight_decay,
            optimizer=d.optimizer if self.optimizer is None else self.optimizer,
        )

    def identity(self) -> dict[str, Any]:
        """The fields that define the experiment (not where it is written)."""
        d = dataclasses.asdict(self)
        d.pop("out")
        d["data"] = str(Path(self.data).resolve())
        return d


def validate(cfg: RunConfig) -> None:
    """Raise a :class:`UserError` naming the first bad parameter."""
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
    checks = [
        (cfg.epochs >= 0, f"--epochs must be >= 0, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr must be a positive number, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, got {cfg.optimizer!r}"),
        (cfg.schedule in ("cosine", "constant"), f"--schedule must be cosine or constant, got {cfg.schedule!r}"),
        (cfg.warmup >= 0, f"--warmup must be >= 0, got {cfg.warmup}"),
        (cfg.precision in ("fp32", "bf16"), f"--precision must be fp32 or bf16, got {cfg.precision!r}"),
        (cfg.grad_clip >= 0, f"--grad-clip must be >= 0, got {cfg.grad_clip}"),
        (cfg.early_stopping >= 0, f"--early-stopping must be >= 0, got {cfg.early_stopping}"),
        (cfg.method != "zero_shot" or cfg.epochs == 0, "zero_shot trains nothing: use --epochs 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    unknown = sorted(set(cfg.options) - set(option_names(cfg.method)))
    if unknown:
        valid = ", ".join(option_names(cfg.method)) or "none"
        raise UserError(f"option(s) {', '.join(unknown)} do not apply to {cfg.method}; valid: {valid}")
    tokens = cfg.options.get("prompt_tokens")
    if tokens is not None and tokens < 0:
        raise UserError(f"--prompt-tokens must be >= 0, got {tokens}")
    if not Path(cfg.data).is_dir():
        raise UserError(f"--data {cfg.data} does not exist: run `vptlib data prepare` first")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: Classifier | None = None  # the selected checkpoint, when run(keep_model=True)


class _Inputs:
    """What the trainable part consumes: cached features, or uint8 pixels to augment/normalise."""

    def __init__(self, model: Classifier, data: Data, cfg: RunConfig, device: torch.device, fp: str):
        self.model, self.data, self.cfg, self.device = model, data, cfg, device
        self.features = model.uses_feature_cache
        if self.features:
            self.splits = _feature_cache(model, data, cfg, device, fp)
        else:
            self.splits = {s: (getattr(data, s).pixels.to(device), getattr(data, s).labels.to(device))
                           for s in ("train", "val", "test")}  # fmt: skip
        self.augment = Augment() if cfg.augment and not self.features else None

    def logits(self, x: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.features:
            return self.model.head(x)
        if train and self.augment is not None:
            x = self.augment(x, gen)
        return self.model(normalize(x, self.data.prep))


def _feature_cache(model, data: Data, cfg: RunConfig, device, fp: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Frozen features for every split, computed once per (backbone, manifest, preprocessing, precision)."""
    key = f"features-{fp}-{data.manifest_hash}-{data.prep.key()}-{cfg.precision}"
    path = data.root / "cache" / f"{key}.safetensors"
    if path.is_file():
        feats = load_file(str(path))
    else:
        feats = {}
        for s in ("train", "val", "test"):
            split = getattr(data, s)
            chunks = []
            for i in tqdm(range(0, len(split), cfg.batch_size), desc=f"features ({s})", leave=False):
                x = normalize(split.pixels[i : i + cfg.batch_size].to(device), data.prep)
                with torch.inference_mode(), autocast(device, cfg.precision):
                    chunks.append(model.features(x).float().cpu())
            feats[s] = torch.cat(chunks) if chunks else torch.zeros(0, model.head.in_features)
        atomic.atomic_write(path, lambda p: save_file(feats, str(p)))
    return {s: (feats[s].to(device), getattr(data, s).labels.to(device)) for s in ("train", "val", "test")}


def _optimizer(model: Classifier, cfg: RunConfig) -> torch.optim.Optimizer:
    groups = model.param_groups(cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt, cfg: RunConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(cfg.warmup * steps_per_epoch, total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def _evaluate(inputs: _Inputs, split: str, cfg: RunConfig) -> tuple[float, np.ndarray]:
    """(mean loss, class probabilities) on one split, in eval mode, no augmentation."""
    x, y = inputs.splits[split]
    if len(y) == 0:
        return float("nan"), np.zeros((0, len(inputs.data.classes)))
    inputs.model.eval()
    losses, probs = [], []
    for i in range(0, len(y), cfg.batch_size):
        with autocast(inputs.device, cfg.precision):
            logits = inputs.logits(x[i : i + cfg.batch_size], train=False).float()
        losses.append(inputs.model.loss(logits, y[i : i + cfg.batch_size]).item() * len(logits))
        probs.append(torch.softmax(logits, -1).cpu())
    return sum(losses) / len(y), torch.cat(probs).numpy()


def _accuracy(probs: np.ndarray, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels.cpu().numpy()).mean()) if len(probs) else float("nan")


def _check_initial_loss(inputs: _Inputs, cfg: RunConfig) -> None:
    x, y = inputs.splits["train"]
    inputs.model.eval()
    with torch.no_grad(), autocast(inputs.device, cfg.precision):
        loss = inputs.model.loss(inputs.logits(x[: cfg.batch_size], train=False).float(), y[: cfg.batch_size])
    if not torch.isfinite(loss):
        raise UserError(f"the loss is {loss.item()} before any training: check the data, the model "
                        f"weights and --precision; refusing to start")  # fmt: skip


def _train_epoch(inputs: _Inputs, opt, sched, cfg: RunConfig, epoch: int, trainable: list, progress: bool):
    x, y = inputs.splits["train"]
    model = inputs.model
    model.train()
    torch.manual_seed(int(generator(cfg.seed, epoch, 1).initial_seed()))  # dropout draws
    order = torch.randperm(len(y), generator=generator(cfg.seed, epoch, 0)).to(y.device)
    aug_gen = generator(cfg.seed, epoch, 2)
    total_loss, correct, seen = 0.0, 0, 0
    steps = math.ceil(len(y) / cfg.batch_size)
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
    for step in bar:
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        with autocast(inputs.device, cfg.precision):
            logits = inputs.logits(x[idx], train=True, gen=aug_gen)
        loss = model.loss(logits.float(), y[idx])
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: lower --lr "
                f"(now {cfg.lr}) or keep --grad-clip on; completed epochs are saved"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in trainable if p.grad is not None], cfg.grad_clip)
        opt.step()
        sched.step()
        total_loss += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y[idx]).sum())
        seen += len(idx)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}")
    return total_loss / seen, correct / seen


def run(
    config: RunConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    keep_model: bool = False,
    **kwargs: Any,
) -> RunResult:
    """Train and evaluate one method; returns the run directory and its metrics.

    Accepts a :class:`RunConfig` or its fields as keyword arguments.
    """
    cfg = (config or RunConfig(**kwargs)).resolved()
    validate(cfg)
    device = pick_device(cfg.device)
    chash = records.config_hash(cfg.identity())
    root = Path(cfg.out) / cfg.profile / cfg.method
    run_dir = records.find_resumable(root, chash) if resume else None
    if resume and run_dir is None and progress:
        print(f"no unfinished run with this configuration under {root}: starting a new one")
    run_dir = run_dir or records.new_run_dir(root, chash)

    seed_everything(cfg.seed)
    clip = load_clip(cfg.model)
    prep = Preprocess.from_processor(clip.processor)
    data = load_data(cfg.data, prep)
    fp = fingerprint(clip.model)
    options = dict(cfg.options)
    if spec(cfg.method).uses_text:
        options.setdefault("class_names", data.classes)
    try:
        model = build(cfg.method, clip, len(data.classes), **options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    del clip  # the method holds its own copy of what it needs
    model.to(device)
    trainable_n, total_n = count_parameters(model)

    if not (run_dir / records.CONFIG).exists():
        atomic.write_json(run_dir / records.CONFIG, {
            **dataclasses.asdict(cfg), "config_hash": chash, "run_id": run_dir.name,
            "method_options": model.options, "classes": list(data.classes),
            "model_fingerprint": fp, "manifest_hash": data.manifest_hash,
            "preprocess": dataclasses.asdict(prep), "git_commit": records.git_commit(),
            "versions": records.versions(), "device": records.device_description(device),
            "prompts": getattr(model, "prompts", None), "trains": model.describe(),
            "trainable_params": trainable_n, "total_params": total_n,
            "splits": {s: len(getattr(data, s)) for s in ("train", "val", "test")},
        })  # fmt: skip

    inputs = _Inputs(model, data, cfg, device, fp)
    trainable = [p for p in model.parameters() if p.requires_grad]
    history: list[dict[str, float]] = []
    best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf, "state": None}
    start_epoch, stale = 0, 0
    opt = sched = None
    if cfg.epochs > 0:
        _check_initial_loss(inputs, cfg)
        opt = _optimizer(model, cfg)
        sched = _scheduler(opt, cfg, math.ceil(len(inputs.splits["train"][1]) / cfg.batch_size))
        state_path = run_dir / records.STATE
        if state_path.is_file():
            st = records.load_state(state_path)
            model.load_state_dict(st["trainable"], strict=False)
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            history, start_epoch, stale = st["history"], st["epoch"], st["stale"]
            best = {**st["best"], "state": st["best_state"]}
            if progress:
                print(f"resuming {run_dir} after epoch {start_epoch}")

    epochs_bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{cfg.method}", disable=not progress or cfg.epochs == 0)
    for epoch in epochs_bar:
        if stale and cfg.early_stopping and stale >= cfg.early_stopping:
            break
        model.on_epoch_start(epoch)
        t0 = time.perf_counter()
        train_loss, train_acc = _train_epoch(inputs, opt, sched, cfg, epoch, trainable, progress)
        train_s = time.perf_counter() - t0
        val_loss, val_probs = _evaluate(inputs, "val", cfg)
        val_acc = _accuracy(val_probs, inputs.splits["val"][1])
        test_loss, test_acc = float("nan"), float("nan")
        if cfg.test_curves:
            test_loss, test_probs = _evaluate(inputs, "test", cfg)
            test_acc = _accuracy(test_probs, inputs.splits["test"][1])
        has_val = len(inputs.splits["val"][1]) > 0
        better = (
            (not has_val) or val_acc > best["val_acc"] or (val_acc == best["val_acc"] and val_loss < best["val_loss"])
        )
        if better:
            snapshot = {k: v.detach().clone().cpu() for k, v in model.trainable_state().items()}
            best = {"epoch": epoch + 1, "val_acc": val_acc, "val_loss": val_loss, "state": snapshot}
            stale = 0
        else:
            stale += 1
        history.append({
            "epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
            "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc, "lr": opt.param_groups[-1]["lr"],
            "seconds": time.perf_counter() - t0, "train_seconds": train_s,
            "images_per_s": len(inputs.splits["train"][1]) / train_s, "selected_so_far": best["epoch"],
        })  # fmt: skip
        epochs_bar.set_postfix(val_acc=f"{val_acc:.3f}", best=best["epoch"])
        atomic.write_bytes(run_dir / records.HISTORY, pd.DataFrame(history).to_csv(index=False).encode())
        records.save_state(run_dir / records.STATE, {
            "epoch": epoch + 1, "trainable": {k: v.detach().cpu() for k, v in model.trainable_state().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history, "stale": stale,
            "best": {k: v for k, v in best.items() if k != "state"}, "best_state": best["state"],
        })  # fmt: skip

    if best["state"] is not None:
        model.load_state_dict(best["state"], strict=False)
    result = _finish(run_dir, cfg, model, inputs, data, history, best, device, trainable_n, total_n)
    result.model = model if keep_model else None
    return result


def _finish(run_dir, cfg, model, inputs, data, history, best, device, trainable_n, total_n) -> RunResult:
    results, rows = {}, []
    for split in ("val", "test"):
        _, probs = _evaluate(inputs, split, cfg)
        labels = inputs.splits[split][1].cpu().numpy()
        if len(labels):
            results[split] = classification_report(labels, probs, data.classes)
        for path, y, p in zip(getattr(data, split).paths, labels, probs, strict=True):
            rows.append({"split": split, "path": path, "true": data.classes[y], "pred": data.classes[int(p.argmax())],
                         **{f"prob_{c}": float(p[i]) for i, c in enumerate(data.classes)}})  # fmt: skip
    _, train_probs = _evaluate(inputs, "train", cfg)
    ckpt_bytes = records.save_weights(run_dir / records.WEIGHTS, model.trainable_state())
    atomic.write_bytes(run_dir / records.PREDICTIONS, pd.DataFrame(rows).to_csv(index=False).encode())
    hist = pd.DataFrame(history)
    if len(hist):
        atomic.write_bytes(run_dir / records.HISTORY, hist.to_csv(index=False).encode())
    metrics = {
        "method": cfg.method, "test": results.get("test"), "val": results.get("val"),
        "train_accuracy": _accuracy(train_probs, inputs.splits["train"][1]),
        "best_epoch": best["epoch"], "selected_by": "validation accuracy (ties: lower validation loss)",
        "epochs_run": len(hist), "stopped_early": bool(len(hist) < cfg.epochs),
        "trainable_params": trainable_n, "total_params": total_n, "checkpoint_bytes": ckpt_bytes,
        "seconds_per_epoch": float(hist["train_seconds"].mean()) if len(hist) else 0.0,
        "images_per_second": float(hist["images_per_s"].mean()) if len(hist) else 0.0,
        "precision": cfg.precision, "device": records.device_description(device),
    }  # fmt: skip
    atomic.write_json(run_dir / records.METRICS, metrics)
    (run_dir / records.STATE).unlink(missing_ok=True)
    return RunResult(run_dir, metrics, hist)
