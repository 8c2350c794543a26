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

Under ``accelerate launch`` (or any launcher that sets ``WORLD_SIZE > 1``) the same
code runs data-parallel through Hugging Face Accelerate: every process draws the same
batch order and augmentation, trains on its share of each batch under DDP with the
loss scaled so the synchronised gradient equals the single-process one, evaluates the
whole validation and test splits, and only the main process writes the run record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import atomic, locks, records
from .augment import Augment
from .backbone import DEFAULT_MODEL, fingerprint, load_clip, model_signature
from .dataset import Data, Preprocess, load_data, manifest_hash, normalize
from .devices import PRECISIONS, autocast, generator, grad_scaler, pick_device, resolve_precision, seed_everything
from .errors import TrainingDiverged, UserError
from .methods import METHODS, Classifier, build, count_parameters, option_names, spec
from .metrics import classification_report
from .predict import logits_in_batches


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
    device: str = "auto"  # auto | cpu | cuda | mps (under accelerate launch: the process's device)
    # auto (bf16 where fast, fp16 on fp16-only GPUs, else fp32) | fp32 | bf16 | fp16 (autocast;
    # fp16 with a gradient scaler); recorded resolved, see vptlib.devices
    precision: str = "auto"
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    early_stopping: int = 0  # patience in epochs without a better val accuracy; 0 disables
    augment: bool = True  # batch augmentation for methods trained on images
    test_curves: bool = False  # also evaluate test each epoch, for plots only (never for selection)
    train_per_class: int | None = None  # few-shot: at most this many training images per class
    compile: bool = False  # torch.compile the model (opt-in; measured by `make bench`)
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


def run_config(method: str, hparams: dict | None = None, **fields: Any) -> RunConfig:
    """A RunConfig from a profile's shared fields, its per-method ``hparams`` and overrides.

    ``None`` values are ignored, so a notebook can pass every parameter it has.
    Method options (``prompt_tokens``, ...) may appear at any level.
    """
    merged = {**(hparams or {}).get(method, {}), **{k: v for k, v in fields.items() if v is not None}}
    known = set(RunConfig.__dataclass_fields__)
    options = {**merged.pop("options", {}), **{k: merged.pop(k) for k in list(merged) if k not in known}}
    return RunConfig(method=method, options=options, **merged)


def validate(cfg: RunConfig) -> None:
    """Raise a :class:`UserError` naming the first bad parameter."""
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
    checks = [
        (cfg.epochs >= 0, f"--epochs must be >= 0, got {cfg.epochs}"),
        (1 <= cfg.batch_size <= 65536, f"--batch-size must be in [1, 65536], got {cfg.batch_size}"),
        (0 <= cfg.seed < 2**63, f"--seed must be an integer in [0, 2**63 - 1], got {cfg.seed}"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr must be a positive number, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, got {cfg.optimizer!r}"),
        (cfg.schedule in ("cosine", "constant"), f"--schedule must be cosine or constant, got {cfg.schedule!r}"),
        (cfg.warmup >= 0, f"--warmup must be >= 0, got {cfg.warmup}"),
        (cfg.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}"),
        (
            cfg.train_per_class is None or cfg.train_per_class >= 1,
            f"--train-per-class must be >= 1, got {cfg.train_per_class}",
        ),
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
    if not Path(cfg.data).is_dir():
        raise UserError(f"--data {cfg.data} does not exist: run `vptlib data prepare` first")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: Classifier | None = None  # the selected checkpoint, when run(keep_model=True)


class _Dist:
    """This process's place in a data-parallel run; one process when not launched in parallel."""

    def __init__(self):
        self.acc = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator  # the process group is Accelerate's, not ours

            self.acc = Accelerator()
        self.rank = self.acc.process_index if self.acc else 0
        self.world = self.acc.num_processes if self.acc else 1
        self.main = self.rank == 0

    def barrier(self) -> None:
        if self.acc:
            self.acc.wait_for_everyone()

    def broadcast(self, obj: Any) -> Any:
        """The main process's value of ``obj``, on every process."""
        if not self.acc:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj if self.main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def wrap(self, module: torch.nn.Module, find_unused: bool) -> torch.nn.Module:
        """DDP through Accelerate, so gradients are averaged over processes in backward."""
        if not self.acc:
            return module
        from accelerate.utils import DistributedDataParallelKwargs

        self.acc.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=find_unused)
        return self.acc.prepare_model(module, device_placement=False)

    def total(self, *values: float) -> list[float]:
        """Sums over processes (training loss and accuracy for the history)."""
        if not self.acc:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        return self.acc.reduce(t, reduction="sum").tolist()


class _Inputs:
    """What the trainable part consumes: cached features, or uint8 pixels to augment/normalise.

    Pixels stay uint8 on the training device (pinned for the one copy to a GPU) and are
    augmented there, so the data pipeline never waits on the host.
    """

    def __init__(self, model: Classifier, data: Data, cfg: RunConfig, device: torch.device, fp: str, dist: _Dist):
        self.model, self.data, self.cfg, self.device = model, data, cfg, device
        self.features = model.uses_feature_cache
        if self.features:
            self.splits = _feature_cache(model, data, cfg, device, fp, dist)
        else:
            self.splits = {s: (_to(getattr(data, s).pixels, device), _to(getattr(data, s).labels, device))
                           for s in ("train", "val", "test")}  # fmt: skip
        self.augment = Augment() if cfg.augment and not self.features else None
        # The module a training step calls: the trainable part, wrapped for DDP when parallel.
        trains = model.head if self.features else model
        self.train_module = dist.wrap(trains, find_unused=model.unused_params_possible) if cfg.epochs else trains
        if cfg.compile:
            self.train_module = torch.compile(self.train_module)

    def logits(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if self.features:
            return (self.train_module if train else self.model.head)(x)
        if train:
            return self.train_module(normalize(x, self.data.prep))
        return self.model(normalize(x, self.data.prep))


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _feature_cache(model, data: Data, cfg: RunConfig, device, fp: str, dist: _Dist) -> dict:
    """Frozen features for every split, computed once per (backbone, manifest, preprocessing, precision).

    Under data parallelism the main process computes them and the others load its file.
    """
    key = f"features-{fp}-{data.manifest_hash}-{data.prep.key()}-{cfg.precision}"
    path = data.root / "cache" / f"{key}.safetensors"
    if dist.main and not path.is_file():
        feats = {}
        for s in ("train", "val", "test"):
            split = _full(data, s)
            chunks = []
            for i in tqdm(range(0, len(split), cfg.batch_size), desc=f"features ({s})", leave=False):
                x = normalize(split.pixels[i : i + cfg.batch_size].to(device), data.prep)
                with torch.inference_mode(), autocast(device, cfg.precision):
                    chunks.append(model.features(x).float().cpu())
            feats[s] = torch.cat(chunks) if chunks else torch.zeros(0, model.head.in_features)
        atomic.atomic_write(path, lambda p: save_file(feats, str(p)))
    dist.barrier()
    feats = load_file(str(path))
    out = {}
    for s in ("train", "val", "test"):
        split = getattr(data, s)
        f = feats[s]
        if _full(data, s) is not split:  # a few-shot subset of the cached split
            f = f[_subset_rows(_full(data, s).paths, split.paths)]
        out[s] = (f.to(device), split.labels.to(device))
    return out


def _full(data: Data, split: str):
    """The whole split whose features are cached, also when the run uses a few-shot subset of it."""
    full = {"train": data.train_full, "val": data.val_full}.get(split)
    return full if full is not None else getattr(data, split)


def _subset_rows(all_paths: list[str], kept: list[str]) -> list[int]:
    where = {p: i for i, p in enumerate(all_paths)}
    return [where[p] for p in kept]


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
    """(mean loss, class probabilities) on one split, in eval mode, no augmentation.

    The batches go through :func:`~vptlib.predict.logits_in_batches`, as a reloaded
    run's predictor does, so ``vptlib predict`` reproduces these probabilities.
    """
    x, y = inputs.splits[split]
    if len(y) == 0:
        return float("nan"), np.zeros((0, len(inputs.data.classes)))
    inputs.model.eval()
    losses, probs = [], []
    batches = logits_in_batches(lambda b: inputs.logits(b, train=False), x, cfg.batch_size, inputs.device,
                                cfg.precision)  # fmt: skip
    for i, logits in zip(range(0, len(y), cfg.batch_size), batches, strict=True):
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


def _train_epoch(inputs: _Inputs, opt, sched, scaler, cfg: RunConfig, epoch: int, trainable: list,
                 progress: bool, dist: _Dist):  # fmt: skip
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
        xb = x[idx]
        if inputs.augment is not None:  # the whole batch, as in one process, then this process's share
            xb = inputs.augment(xb, aug_gen)
        mine = slice(dist.rank, None, dist.world)
        xb, yb = xb[mine], y[idx][mine]
        with autocast(inputs.device, cfg.precision):
            logits = inputs.logits(xb, train=True)
        loss = model.loss(logits.float(), yb)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: lower --lr "
                f"(now {cfg.lr}) or keep --grad-clip on; completed epochs are saved"
            )
        opt.zero_grad(set_to_none=True)
        # DDP averages gradients over processes; this weight makes that average the
        # gradient of the whole batch's mean loss, also when the last batch splits unevenly.
        # Under fp16 the scaler multiplies the loss so small gradients survive, then unscales
        # before clipping and skips the step when a gradient overflowed; elsewhere it is a no-op.
        weight = 1.0 if model.batch_loss_is_global else len(yb) * dist.world / len(idx)
        scaler.scale(loss * weight).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for p in trainable if p.grad is not None], cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        model.on_step_end()
        sched.step()
        total_loss += loss.item() * len(yb)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(yb)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}")
    total_loss, correct, seen = dist.total(total_loss, correct, seen)
    return total_loss / seen, correct / seen


def run(
    config: RunConfig | None = None,
    *,
    resume: bool = False,
    reuse: bool = False,
    progress: bool = True,
    keep_model: bool = False,
    **kwargs: Any,
) -> RunResult:
    """Train and evaluate one method; returns the run directory and its metrics.

    Accepts a :class:`RunConfig` or its fields as keyword arguments. ``resume``
    continues the newest unfinished run of the same configuration; ``reuse`` returns
    the newest finished one made by the same code instead of training again (sweeps).
    """
    cfg = (config or RunConfig(**kwargs)).resolved()
    validate(cfg)
    dist = _Dist()
    device = dist.acc.device if dist.acc else pick_device(cfg.device)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))
    progress = progress and dist.main
    chash = records.config_hash(cfg.identity())
    code = records.code_hash()
    root = Path(cfg.out) / cfg.profile / cfg.method
    seed_everything(cfg.seed)
    inputs = _Identity(cfg.model, cfg.data)
    if reuse and not keep_model:
        done = dist.broadcast(records.find_run(root, chash, finished=True, code=code) if dist.main else None)
        if done is not None:
            inputs.check(done, "reuse")
            return RunResult(done, json.loads((done / records.METRICS).read_text()), _read_history(done))
    run_dir = None
    if dist.main:
        run_dir = records.find_resumable(root, chash) if resume else None
        if run_dir is not None:
            inputs.check(run_dir, "resume")
        elif resume and progress:
            print(f"no unfinished run with this configuration under {root}: starting a new one")
        run_dir = run_dir or records.new_run_dir(root, chash)
    run_dir = Path(dist.broadcast(str(run_dir) if run_dir else None))
    # One process trains (or resumes) a run at a time; the lock dies with its holder.
    with locks.exclusive(run_dir, f"run {run_dir}") if dist.main else contextlib.nullcontext():
        clip = inputs.clip()
        return _run_locked(cfg, clip, inputs.fingerprint(), run_dir, device, dist, chash, code, progress, keep_model)


class _Identity:
    """The model and data a run is given now, to compare with what a recorded run used.

    The model's fingerprint needs its weights loaded; a local folder whose weight files
    have the size and modification time recorded by the run (``model_signature``) is
    taken as unchanged without loading, so reusing a finished run stays cheap.
    """

    def __init__(self, model: str, data: str):
        self.model, self.signature = model, model_signature(model)
        self.manifest_hash = manifest_hash(data)
        self._clip, self._fp = None, None

    def clip(self):
        if self._clip is None:
            self._clip = load_clip(self.model)
        return self._clip

    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = fingerprint(self.clip().model)
        return self._fp

    def check(self, run_dir: Path, action: str) -> None:
        """Refuse to resume or reuse a run whose model or data are not the ones given now."""
        try:
            then = json.loads((run_dir / records.CONFIG).read_text())
        except (OSError, ValueError):
            raise UserError(f"cannot {action} {run_dir}: its config.json is unreadable; start a new run") from None

        def refuse(what: str, key: str, old, new) -> UserError:
            return UserError(f"cannot {action} {run_dir}: {what} changed since it was made ({key} {old} -> {new}); "
                             f"start a new run (without --resume), or restore the original model and data")  # fmt: skip

        if then.get("manifest_hash") != self.manifest_hash:
            raise refuse("the data (manifest.csv)", "manifest_hash", then.get("manifest_hash"), self.manifest_hash)
        if self.signature is not None and then.get("model_signature") == self.signature:
            return
        if then.get("model_fingerprint") != self.fingerprint():
            raise refuse("the model's weights", "model_fingerprint", then.get("model_fingerprint"), self._fp)


def _run_locked(cfg: RunConfig, clip, fp: str, run_dir: Path, device: torch.device, dist: _Dist, chash: str,
                code: str, progress: bool, keep_model: bool) -> RunResult:  # fmt: skip
    prep = Preprocess.from_processor(clip.processor)
    data = load_data(cfg.data, prep)
    if cfg.train_per_class is not None:
        data = data.few_shot(cfg.train_per_class, cfg.seed)
    attention = getattr(clip.model.config, "_attn_implementation", None)
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

    if dist.main and not (run_dir / records.CONFIG).exists():
        atomic.write_json(run_dir / records.CONFIG, {
            **dataclasses.asdict(cfg), "config_hash": chash, "code_hash": code, "run_id": run_dir.name,
            "method_options": model.options, "classes": list(data.classes),
            "model_fingerprint": fp, "model_signature": model_signature(cfg.model),
            "manifest_hash": data.manifest_hash, "attention": attention,
            "preprocess": dataclasses.asdict(prep), "git_commit": records.git_commit(),
            "versions": records.versions(), "device": records.device_description(device),
            "processes": dist.world, "prompts": getattr(model, "prompts", None), "trains": model.describe(),
            "trainable_params": trainable_n, "total_params": total_n,
            "splits": {s: len(getattr(data, s)) for s in ("train", "val", "test")},
        })  # fmt: skip

    inputs = _Inputs(model, data, cfg, device, fp, dist)
    # A method fitted in closed form on the cached features trains no epochs (CLIP's linear probe).
    fitted = model.fit_features(inputs.splits) if inputs.features else None
    if fitted is not None:
        cfg = dataclasses.replace(cfg, epochs=0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    history: list[dict[str, float]] = []
    best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf, "state": None}
    start_epoch, stale = 0, 0
    opt = sched = None
    scaler = grad_scaler(device, cfg.precision)
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
            if st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
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
        try:
            train_loss, train_acc = _train_epoch(inputs, opt, sched, scaler, cfg, epoch, trainable, progress, dist)
        except TrainingDiverged as exc:
            if best["state"] is not None and dist.main:  # keep what the completed epochs achieved
                records.save_weights(run_dir / records.WEIGHTS, best["state"])
                raise TrainingDiverged(f"{exc}; the weights of epoch {best['epoch']} (best on validation) are in "
                                       f"{run_dir / records.WEIGHTS}") from None  # fmt: skip
            raise
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
        if dist.main:
            atomic.write_bytes(run_dir / records.HISTORY, pd.DataFrame(history).to_csv(index=False).encode())
            records.save_state(run_dir / records.STATE, {
                "epoch": epoch + 1, "trainable": {k: v.detach().cpu() for k, v in model.trainable_state().items()},
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "history": history, "stale": stale,
                "best": {k: v for k, v in best.items() if k != "state"}, "best_state": best["state"],
            })  # fmt: skip

    if best["state"] is not None:
        model.load_state_dict(best["state"], strict=False)

    def score(split: str) -> tuple[float, float]:
        loss, probs = _evaluate(inputs, split, cfg)
        return _accuracy(probs, inputs.splits[split][1]), loss

    extra = {**(fitted or {}), **model.finalize(score)}
    result = _finish(run_dir, cfg, model, inputs, data, history, best, device, trainable_n, total_n, extra, dist)
    dist.barrier()
    result.model = model if keep_model else None
    return result


def _read_history(run_dir: Path) -> pd.DataFrame:
    path = run_dir / records.HISTORY
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def _finish(run_dir, cfg, model, inputs, data, history, best, device, trainable_n, total_n, extra, dist):
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
    hist = pd.DataFrame(history)
    metrics = {
        "method": cfg.method, "test": results.get("test"), "val": results.get("val"),
        "train_accuracy": _accuracy(train_probs, inputs.splits["train"][1]),
        "best_epoch": best["epoch"], "selected_by": "validation accuracy (ties: lower validation loss)",
        "epochs_run": len(hist), "stopped_early": bool(len(hist) < cfg.epochs),
        "trainable_params": trainable_n, "total_params": total_n, "checkpoint_bytes": 0,
        "seconds_per_epoch": float(hist["train_seconds"].mean()) if len(hist) else 0.0,
        "images_per_second": float(hist["images_per_s"].mean()) if len(hist) else 0.0,
        "precision": cfg.precision, "device": records.device_description(device), "processes": dist.world,
        "train_images": len(inputs.splits["train"][1]), **extra,
    }  # fmt: skip
    if dist.main:  # the record is written once, by one process
        metrics["checkpoint_bytes"] = records.save_weights(run_dir / records.WEIGHTS, model.trainable_state())
        atomic.write_bytes(run_dir / records.PREDICTIONS, pd.DataFrame(rows).to_csv(index=False).encode())
        if len(hist):
            atomic.write_bytes(run_dir / records.HISTORY, hist.to_csv(index=False).encode())
        atomic.write_json(run_dir / records.METRICS, metrics)
        (run_dir / records.STATE).unlink(missing_ok=True)
        if results.get("test"):
            records.log_test_look(run_dir, cfg, results["test"]["accuracy"])
    return RunResult(run_dir, metrics, hist)


def run_seeds(config: RunConfig, seeds: list[int], **kwargs: Any) -> list[RunResult]:
    """Run ``config`` once per seed and record the group as this method's current result.

    The group file (``runs/<profile>/<method>/group.json``) names exactly the runs the
    results page aggregates, so a rerun with new settings replaces the whole row.
    Zero-shot trains nothing and runs once, whatever the seeds.
    """
    seeds = list(seeds)[:1] if config.method == "zero_shot" else list(seeds)
    if not seeds:
        raise UserError("seeds is empty: give at least one seed")
    results = [run(dataclasses.replace(config, seed=s), **kwargs) for s in seeds]
    if int(os.environ.get("RANK", "0")) == 0:
        root = Path(config.out) / config.profile / config.method
        atomic.write_json(root / records.GROUP, {"runs": [r.run_dir.name for r in results], "seeds": seeds})
    return results
