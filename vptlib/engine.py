"""Training and evaluation: ``vptlib run`` and :func:`run`, its Python twin.

One run trains one method on one prepared data folder and writes a run record
(:mod:`vptlib.records`). The rules that keep it honest:

* the epoch is **selected on validation** accuracy (ties: lower validation loss);
  test metrics are computed on that checkpoint. Per-epoch test accuracy is recorded
  for plotting (``test_curves``) and never used for any choice; a tuning grid's points
  (``evaluate_test=False``) never look at test at all;
* every epoch's shuffling, augmentation and dropout draw from generators seeded by
  ``(seed, epoch)``, so a run killed mid-epoch and resumed with ``resume=True``
  finishes with the same metrics as an uninterrupted one (on the CPU);
* a non-finite loss before training is refused; one during training stops the run
  with a message naming the epoch and step.

Under ``accelerate launch`` (or any launcher that sets ``WORLD_SIZE > 1``) the same
code runs data-parallel (:mod:`vptlib.parallel`): every process draws the same batch
order and augmentation, trains on its share of each batch under DDP with the loss
scaled so the synchronised gradient equals the single-process one, evaluates the
whole validation and test splits, and only the main process writes the run record
(:mod:`vptlib.recording`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from . import atomic, claims, locks, recording, records
from .config import RunConfig, run_config, validate
from .dataset import Data, Preprocess, load_data
from .devices import (
    attention_kernel,
    autocast,
    cast_frozen,
    generator,
    grad_scaler,
    pick_device,
    resolve_precision,
    seed_everything,
    set_attention,
)
from .errors import TrainingDiverged, UserError
from .inputs import Inputs, accuracy, evaluate
from .methods import Classifier, build, spec
from .parallel import Dist

__all__ = ["RunConfig", "RunResult", "run", "run_config", "run_seeds", "validate"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: Classifier | None = None  # the selected checkpoint, when run(keep_model=True)


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
    the newest finished one made by the same code instead of training again (sweeps,
    tuning grids). A reused run that has not been evaluated on test while ``config``
    asks for it (a chosen grid point) is evaluated on test first.
    """
    started = time.perf_counter()
    cfg = (config or RunConfig(**kwargs)).resolved()
    validate(cfg)
    dist = Dist()
    device = dist.acc.device if dist.acc else pick_device(cfg.device)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))
    progress = progress and dist.main
    seed_everything(cfg.seed)
    given = claims.Given(cfg.model, cfg.data, cfg.revision)
    if reuse and not keep_model:
        done = claims.reuse(cfg, given, device, dist)
        if done is not None:
            return done
    run_dir = claims.claim_run_dir(cfg, given, resume, dist, progress)
    # One process trains (or resumes) a run at a time; the lock dies with its holder.
    with locks.exclusive(run_dir, f"run {run_dir}") if dist.main else contextlib.nullcontext():
        return _train_and_record(cfg, given, run_dir, device, dist, progress, keep_model, started)


def _build(cfg: RunConfig, clip) -> tuple[Data, Preprocess, Classifier]:
    """The run's data (a few-shot subset when asked) and its untrained classifier."""
    prep = Preprocess.from_processor(clip.processor)
    data = load_data(cfg.data, prep, keep_in_memory=True)
    if cfg.train_per_class is not None:
        data = data.few_shot(cfg.train_per_class, cfg.seed)
    options = dict(cfg.options)
    if spec(cfg.method).uses_text:
        options.setdefault("class_names", data.classes)
    try:
        model = build(cfg.method, clip, len(data.classes), **options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return data, prep, model


def _train_and_record(cfg: RunConfig, given: claims.Given, run_dir: Path, device: torch.device, dist: Dist,
                      progress: bool, keep_model: bool, started: float) -> RunResult:  # fmt: skip
    clip = given.clip()
    data, prep, model = _build(cfg, clip)
    model.to(device)
    cast_frozen(model, cfg.precision)  # frozen layers stored in bf16/fp16 once: the same logits, faster steps
    attention = attention_kernel(device, cfg.precision)
    set_attention(model, attention)
    if dist.main and not (run_dir / records.CONFIG).exists():
        identity = {
            "config_hash": records.config_hash(cfg.identity()),
            "code_hash": records.code_hash(),
            "model_fingerprint": given.fingerprint(),
            "model_source": clip.source.record(),
        }
        recording.write_config(run_dir, cfg, model, data, prep, identity=identity, attention=attention,
                               device=device, processes=dist.world)  # fmt: skip
    inputs = Inputs(model, data, cfg, device, given.fingerprint(), dist)
    # What a run costs before it trains (loading, building, staging the inputs): the model
    # and pixels are loaded once per process, so later runs in one process pay little.
    setup_seconds = time.perf_counter() - started
    # A method fitted in closed form on the cached features trains no epochs (CLIP's linear probe).
    fitted = model.fit_features(inputs.splits) if inputs.features else None
    if fitted is not None:
        cfg = dataclasses.replace(cfg, epochs=0)
        fitted["fit_seconds"] = time.perf_counter() - started - setup_seconds
    state = _fit(cfg, inputs, run_dir, dist, progress)
    if state.best_state is not None:
        model.load_state_dict(state.best_state, strict=False)

    def score(split: str) -> tuple[float, float]:
        loss, probs = evaluate(inputs, split, cfg)
        return accuracy(probs, inputs.splits[split][1]), loss

    extra = {**(fitted or {}), **model.finalize(score), "setup_seconds": setup_seconds}
    outcome = recording.Outcome(state.history, state.best["epoch"], extra, started)
    metrics = recording.write_result(run_dir, cfg, model, inputs, data, outcome, device, dist.world, dist.main)
    dist.barrier()
    return RunResult(run_dir, metrics, pd.DataFrame(state.history), model if keep_model else None)


@dataclass
class _State:
    """Where training stands: saved after every epoch, so a killed run resumes from it."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=lambda: {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf})
    best_state: dict[str, torch.Tensor] | None = None  # the trainable tensors of the best epoch
    epoch: int = 0  # epochs completed
    stale: int = 0  # epochs since the best one

    def consider(self, epoch: int, val_acc: float, val_loss: float, has_val: bool, model: Classifier) -> None:
        """Keep this epoch if it beats the best on validation (ties: lower loss)."""
        b = self.best
        if (not has_val) or val_acc > b["val_acc"] or (val_acc == b["val_acc"] and val_loss < b["val_loss"]):
            self.best = {"epoch": epoch + 1, "val_acc": val_acc, "val_loss": val_loss}
            self.best_state = {k: v.detach().clone().cpu() for k, v in model.trainable_state().items()}
            self.stale = 0
        else:
            self.stale += 1


def _fit(cfg: RunConfig, inputs: Inputs, run_dir: Path, dist: Dist, progress: bool) -> _State:
    """Train ``cfg.epochs`` epochs (from a saved state when one exists), selecting on validation."""
    model, state = inputs.model, _State()
    if cfg.epochs == 0:
        return state
    _check_initial_loss(inputs, cfg)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, math.ceil(len(inputs.splits["train"][1]) / cfg.batch_size))
    scaler = grad_scaler(inputs.device, cfg.precision)
    if (run_dir / records.STATE).is_file():
        state = _restore(run_dir, model, opt, sched, scaler)
        if progress:
            print(f"resuming {run_dir} after epoch {state.epoch}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(range(state.epoch, cfg.epochs), desc=f"{cfg.method}", disable=not progress)
    for epoch in bar:
        if cfg.early_stopping and state.stale >= cfg.early_stopping:
            break
        model.on_epoch_start(epoch)
        try:
            row = _epoch(inputs, opt, sched, scaler, cfg, epoch, trainable, progress, dist)
        except TrainingDiverged as exc:
            _keep_best(exc, state, run_dir, dist)
        state.consider(epoch, row["val_acc"], row["val_loss"], len(inputs.splits["val"][1]) > 0, model)
        state.history.append({**row, "selected_so_far": state.best["epoch"]})
        state.epoch = epoch + 1
        bar.set_postfix(val_acc=f"{row['val_acc']:.3f}", best=state.best["epoch"])
        if dist.main:
            _save_progress(run_dir, state, model, opt, sched, scaler)
    return state


def _epoch(inputs: Inputs, opt, sched, scaler, cfg: RunConfig, epoch: int, trainable: list, progress: bool,
           dist: Dist) -> dict[str, float]:  # fmt: skip
    """One epoch of training, then validation (and test, for curves only): one history row."""
    t0 = time.perf_counter()
    train_loss, train_acc = _train_epoch(inputs, opt, sched, scaler, cfg, epoch, trainable, progress, dist)
    train_s = time.perf_counter() - t0
    val_loss, val_probs = evaluate(inputs, "val", cfg)
    test_loss, test_acc = float("nan"), float("nan")
    if cfg.test_curves and cfg.evaluate_test:
        test_loss, test_probs = evaluate(inputs, "test", cfg)
        test_acc = accuracy(test_probs, inputs.splits["test"][1])
    return {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
            "val_acc": accuracy(val_probs, inputs.splits["val"][1]), "test_loss": test_loss, "test_acc": test_acc,
            "lr": opt.param_groups[-1]["lr"], "seconds": time.perf_counter() - t0, "train_seconds": train_s,
            "images_per_s": len(inputs.splits["train"][1]) / train_s}  # fmt: skip


def _keep_best(exc: TrainingDiverged, state: _State, run_dir: Path, dist: Dist) -> None:
    """A diverged run keeps what its completed epochs achieved, then stops with the reason."""
    if state.best_state is not None and dist.main:
        records.save_weights(run_dir / records.WEIGHTS, state.best_state)
        raise TrainingDiverged(f"{exc}; the weights of epoch {state.best['epoch']} (best on validation) are in "
                               f"{run_dir / records.WEIGHTS}") from None  # fmt: skip
    raise exc


def _save_progress(run_dir: Path, state: _State, model: Classifier, opt, sched, scaler) -> None:
    atomic.write_bytes(run_dir / records.HISTORY, pd.DataFrame(state.history).to_csv(index=False).encode())
    records.save_state(run_dir / records.STATE, {
        "epoch": state.epoch, "trainable": {k: v.detach().cpu() for k, v in model.trainable_state().items()},
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
        "history": state.history, "stale": state.stale, "best": state.best, "best_state": state.best_state,
    })  # fmt: skip


def _restore(run_dir: Path, model: Classifier, opt, sched, scaler) -> _State:
    st = records.load_state(run_dir / records.STATE)
    model.load_state_dict(st["trainable"], strict=False)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    if st.get("scaler"):
        scaler.load_state_dict(st["scaler"])
    return _State(st["history"], st["best"], st["best_state"], st["epoch"], st["stale"])


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


def _check_initial_loss(inputs: Inputs, cfg: RunConfig) -> None:
    x, y = inputs.splits["train"]
    inputs.model.eval()
    with torch.no_grad(), autocast(inputs.device, cfg.precision):
        loss = inputs.model.loss(inputs.logits(x[: cfg.batch_size], train=False).float(), y[: cfg.batch_size])
    if not torch.isfinite(loss):
        raise UserError(f"the loss is {loss.item()} before any training: check the data, the model "
                        f"weights and --precision; refusing to start")  # fmt: skip


def _train_epoch(inputs: Inputs, opt, sched, scaler, cfg: RunConfig, epoch: int, trainable: list,
                 progress: bool, dist: Dist):  # fmt: skip
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


def read_history(run_dir: Path) -> pd.DataFrame:
    path = run_dir / records.HISTORY
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def run_seeds(config: RunConfig, seeds: list[int], **kwargs: Any) -> list[RunResult]:
    """Run ``config`` once per seed and record the group as this method's current result.

    The group file (``runs/<profile>/<method>/group.json``) names exactly the runs the
    results page aggregates, so a rerun with new settings replaces the whole row.
    A method that trains nothing runs once, whatever the seeds.
    """
    seeds = list(seeds) if spec(config.method).trains else list(seeds)[:1]
    if not seeds:
        raise UserError("seeds is empty: give at least one seed")
    results = [run(dataclasses.replace(config, seed=s), **kwargs) for s in seeds]
    if int(os.environ.get("RANK", "0")) == 0:
        root = claims.method_root(config)
        atomic.write_json(root / records.GROUP, {"runs": [r.run_dir.name for r in results], "seeds": seeds})
    return results
