"""The training loop of one run: epochs, the optimiser and schedule, selection on validation,
and the state saved after every epoch so that a killed run resumes where it stopped.

:func:`fit` is what :func:`vptlib.runs.engine.run` calls once the run is staged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pandas as pd
import torch
from tqdm import tqdm

from vptlib import atomic
from vptlib.errors import TrainingDiverged, UserError
from vptlib.methods import Classifier
from vptlib.selection import improves

from . import records
from .config import RunConfig
from .context import RunContext
from .devices import autocast, generator, grad_scaler
from .evaluation import accuracy, evaluate
from .staging import StagedRun


@dataclass
class State:
    """Where training stands: saved after every epoch, so a killed run resumes from it."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=lambda: {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf})
    best_state: dict[str, torch.Tensor] | None = None  # the trainable tensors of the best epoch
    epoch: int = 0  # epochs completed
    stale: int = 0  # epochs since the best one

    def consider(self, epoch: int, val_acc: float, val_loss: float, by_val: bool, model: Classifier) -> None:
        """Keep this epoch if it beats the best on validation (:mod:`vptlib.selection`), or
        always when the run does not select on validation (the last epoch is kept)."""
        if not by_val or improves(val_acc, val_loss, self.best["val_acc"], self.best["val_loss"]):
            self.best = {"epoch": epoch + 1, "val_acc": val_acc, "val_loss": val_loss}
            self.best_state = {k: v.detach().clone().cpu() for k, v in model.trainable_state().items()}
            self.stale = 0
        else:
            self.stale += 1


@dataclass
class TrainState:
    """What every epoch reads and changes, in one place: the run, its staged inputs, the
    optimiser, schedule and gradient scaler, the tensors it trains, and where training stands."""

    ctx: RunContext
    inputs: StagedRun
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: Any
    trainable: list[torch.Tensor]
    progress: State = field(default_factory=State)

    @property
    def cfg(self) -> RunConfig:
        return self.ctx.cfg


def fit(ctx: RunContext, inputs: StagedRun) -> State:
    """Train ``cfg.epochs`` epochs (from a saved state when one exists), selecting on validation."""
    cfg, model = ctx.cfg, inputs.model
    if cfg.epochs == 0:
        return State()
    _check_initial_loss(inputs, cfg)
    opt = make_optimizer(model, cfg)
    ts = TrainState(
        ctx,
        inputs,
        opt,
        make_scheduler(opt, cfg, steps_per_epoch(cfg, inputs)),
        grad_scaler(inputs.device, cfg.precision),
        [p for p in model.parameters() if p.requires_grad],
    )
    if (ctx.run_dir / records.STATE).is_file():
        ts.progress = _restore(ts)
        if ctx.progress:
            print(f"resuming {ctx.run_dir} after epoch {ts.progress.epoch}")
    state = ts.progress
    bar = tqdm(range(state.epoch, cfg.epochs), desc=f"{cfg.method}", disable=not ctx.progress)
    for epoch in bar:
        if cfg.early_stopping and state.stale >= cfg.early_stopping:
            break
        model.on_epoch_start(epoch)
        try:
            row = _epoch(ts, epoch)
        except TrainingDiverged as exc:
            _keep_best(exc, ts)
        by_val = cfg.select == "val" and len(inputs.splits["val"][1]) > 0  # "last": every epoch replaces the kept one
        state.consider(epoch, row["val_acc"], row["val_loss"], by_val, model)
        state.history.append({**row, "selected_so_far": state.best["epoch"]})
        state.epoch = epoch + 1
        bar.set_postfix(val_acc=f"{row['val_acc']:.3f}", best=state.best["epoch"])
        if ctx.dist.main:
            _save_progress(ts)
    return state


def _epoch(ts: TrainState, epoch: int) -> dict[str, float]:
    """One epoch of training, then validation (and test, for curves only): one history row."""
    cfg, inputs = ts.cfg, ts.inputs
    t0 = time.perf_counter()
    train_loss, train_acc, norms = _train_epoch(ts, epoch)
    train_s = time.perf_counter() - t0
    val_loss, val_probs = evaluate(inputs, "val", cfg)
    test_loss, test_acc = float("nan"), float("nan")
    if cfg.test_curves and cfg.evaluate_test:
        test_loss, test_probs = evaluate(inputs, "test", cfg)
        test_acc = accuracy(test_probs, inputs.splits["test"][1])
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": accuracy(val_probs, inputs.splits["val"][1]),
        "test_loss": test_loss,
        "test_acc": test_acc,
        "lr": ts.opt.param_groups[-1]["lr"],
        "grad_norm_mean": norms.mean,  # before clipping, over the epoch's steps
        "grad_norm_max": norms.max,
        "seconds": time.perf_counter() - t0,
        "train_seconds": train_s,
        "images_per_s": _images_per_epoch(cfg, inputs) / train_s,
        "steps": (epoch + 1) * steps_per_epoch(cfg, inputs),  # optimiser steps so far
    }


def _keep_best(exc: TrainingDiverged, ts: TrainState) -> NoReturn:
    """A diverged run keeps what its completed epochs achieved, records why (a rerun reports
    it without training again: :data:`~vptlib.runs.records.DIVERGED`), then stops by raising."""
    reason, state, run_dir, main = str(exc), ts.progress, ts.ctx.run_dir, ts.ctx.dist.main
    if state.best_state is not None and main:
        records.save_weights(run_dir / records.WEIGHTS, state.best_state)
        reason = (
            f"{exc}; the weights of epoch {state.best['epoch']} (best on validation) are in {run_dir / records.WEIGHTS}"
        )
    if main:
        atomic.write_json(run_dir / records.DIVERGED, {"reason": reason, "epoch": state.epoch + 1})
    raise TrainingDiverged(reason) from None


def _save_progress(ts: TrainState) -> None:
    state, run_dir = ts.progress, ts.ctx.run_dir
    atomic.write_bytes(run_dir / records.HISTORY, pd.DataFrame(state.history).to_csv(index=False).encode())
    records.save_state(
        run_dir / records.STATE,
        {
            "epoch": state.epoch,
            "trainable": {k: v.detach().cpu() for k, v in ts.inputs.model.trainable_state().items()},
            "optimizer": ts.opt.state_dict(),
            "scheduler": ts.sched.state_dict(),
            "scaler": ts.scaler.state_dict(),
            "history": state.history,
            "stale": state.stale,
            "best": state.best,
            "best_state": state.best_state,
        },
    )


def _restore(ts: TrainState) -> State:
    st = records.load_state(ts.ctx.run_dir / records.STATE)
    ts.inputs.model.load_state_dict(st["trainable"], strict=False)
    ts.opt.load_state_dict(st["optimizer"])
    ts.sched.load_state_dict(st["scheduler"])
    if st.get("scaler"):
        ts.scaler.load_state_dict(st["scaler"])
    return State(st["history"], st["best"], st["best_state"], st["epoch"], st["stale"])


def steps_per_epoch(cfg: RunConfig, inputs: StagedRun) -> int:
    """Optimiser steps in one epoch (``cfg.epoch_steps``): one pass over this run's training
    images, or ("full-split") one pass over the whole training split, however few images a
    few-shot run trains on."""
    data = inputs.data
    if inputs.model.full_batch:  # one step on the whole training split (ProLIP)
        return 1
    n = len(data.train_full or data.train) if cfg.epoch_steps == "full-split" else len(data.train)
    if _copies(inputs) > 1:
        # CLAP's run_epoch: len(train_loader_x) batches over the N images (Dassl's loader drops
        # the last partial batch when there is a full one), drawn from the pool of their views.
        return n // cfg.batch_size if n >= cfg.batch_size else 1
    return max(1, math.ceil(n / cfg.batch_size))


def _copies(inputs: StagedRun) -> int:
    """How many examples an image is in the pool an epoch draws from: its V views under
    ``epoch_draws_views``, else 1."""
    return len(inputs.views[0]) if inputs.views is not None and inputs.model.epoch_draws_views else 1


def train_examples(inputs: StagedRun) -> tuple[torch.Tensor, torch.Tensor]:
    """What an epoch iterates over: the training split, or every (image, view) pair of its
    cached augmented views when the method's epoch covers them (CLAP)."""
    if _copies(inputs) == 1:
        return inputs.splits["train"]
    views, labels = inputs.views
    return views.flatten(0, 1), labels.repeat(len(views))


def train_batch(cfg: RunConfig, inputs: StagedRun) -> int:
    """Examples per optimiser step: the run's batch size, or every training example for a
    full-batch method."""
    return len(train_examples(inputs)[1]) if inputs.model.full_batch else cfg.batch_size


def _images_per_epoch(cfg: RunConfig, inputs: StagedRun) -> int:
    if _copies(inputs) > 1:  # batches drawn from the pool of views, the last one whole
        return steps_per_epoch(cfg, inputs) * cfg.batch_size
    n = len(inputs.data.train)
    return n if cfg.epoch_steps == "pass" else steps_per_epoch(cfg, inputs) * train_batch(cfg, inputs)


def make_optimizer(model: Classifier, cfg: RunConfig) -> torch.optim.Optimizer:
    groups = model.param_groups(cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg: RunConfig, steps_per_epoch: int):
    # open_clip's cosine_lr, which WiSE-FT and FLYP train with: the warm-up's first step
    # already has lr/warm (transformers' get_cosine_schedule_with_warmup starts at 0, one
    # step later); past the warm-up the two are equal (tests/runs/test_recipes.py).
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(cfg.warmup * steps_per_epoch, total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _check_initial_loss(inputs: StagedRun, cfg: RunConfig) -> None:
    x, y = inputs.splits["train"]
    inputs.model.eval()
    with torch.no_grad(), autocast(inputs.device, cfg.precision):
        loss = inputs.model.loss(inputs.logits(x[: cfg.batch_size], train=False).float(), y[: cfg.batch_size])
    if not torch.isfinite(loss):
        raise UserError(
            f"the loss is {loss.item()} before any training: check the data, the model "
            f"weights and --precision; refusing to start"
        )


def _train_epoch(ts: TrainState, epoch: int) -> tuple[float, float, GradNorms]:
    """One pass of optimiser steps: (mean training loss, training accuracy, gradient norms)."""
    inputs, cfg, opt, sched, scaler = ts.inputs, ts.cfg, ts.opt, ts.sched, ts.scaler
    trainable, progress, dist = ts.trainable, ts.ctx.progress, ts.ctx.dist
    x, y = train_examples(inputs)
    views = inputs.views if inputs.views is not None and not inputs.model.epoch_draws_views else None
    model = inputs.model
    model.train()
    torch.manual_seed(int(generator(cfg.seed, epoch, 1).initial_seed()))  # dropout draws
    steps, batch = steps_per_epoch(cfg, inputs), train_batch(cfg, inputs)
    # Passes in a fixed order drawn from (seed, epoch): one pass is the usual epoch; a few-shot
    # run under "full-split" takes as many passes as its step budget needs, back to back.
    order_gen = generator(cfg.seed, epoch, 0)
    passes = math.ceil(steps * batch / len(y))
    order = torch.cat([torch.randperm(len(y), generator=order_gen) for _ in range(passes)]).to(y.device)
    aug_gen = generator(cfg.seed, epoch, 2)
    total_loss, correct, seen, norms = 0.0, 0, 0, []
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
    for step in bar:
        idx = order[step * batch : (step + 1) * batch]
        if views is not None:  # each image as one of its cached augmented views, drawn per epoch
            xb = views[0][torch.randint(len(views[0]), (len(idx),), generator=aug_gen).to(idx.device), idx]
        else:
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
                f"(now {cfg.lr}) or clip gradients (--grad-clip 1); completed epochs are saved"
            )
        opt.zero_grad(set_to_none=True)
        # DDP averages gradients over processes; this weight makes that average the
        # gradient of the whole batch's mean loss, also when the last batch splits unevenly.
        # Under fp16 the scaler multiplies the loss so small gradients survive, then unscales
        # before clipping and skips the step when a gradient overflowed; elsewhere it is a no-op.
        weight = 1.0 if model.batch_loss_is_global else len(yb) * dist.world / len(idx)
        scaler.scale(loss * weight).backward()
        # The norm is measured on every step (the history logs it); it is clipped only where
        # the method's recipe clips (inf: measure, scale by 1).
        scaler.unscale_(opt)
        limit = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_([p for p in trainable if p.grad is not None], limit))
        if math.isfinite(norm):  # fp16: an overflowed step is skipped by the scaler, not logged
            norms.append(norm)
        scaler.step(opt)
        scaler.update()
        model.on_step_end()
        sched.step()
        total_loss += loss.item() * len(yb)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(yb)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}")
    total_loss, correct, seen = dist.total(total_loss, correct, seen)
    return total_loss / seen, correct / seen, GradNorms.of(norms)


@dataclass(frozen=True)
class GradNorms:
    """The global gradient norm over one epoch's steps, before clipping (NaN: no step counted)."""

    mean: float
    max: float

    @classmethod
    def of(cls, norms: list[float]) -> GradNorms:
        return cls(sum(norms) / len(norms), max(norms)) if norms else cls(math.nan, math.nan)
