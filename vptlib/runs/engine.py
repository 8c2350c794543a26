"""Training and evaluation: ``vptlib run`` and :func:`run`, its Python twin.

One run trains one method on one prepared data folder and writes a run record
(:mod:`vptlib.runs.records`). The rules that keep it honest:

* the epoch is **selected on validation** accuracy (ties: lower validation loss), or
  under ``select="last"`` (the validation-free protocol) the last epoch is kept and no
  method choice reads validation; test metrics are computed on that checkpoint. Per-epoch test accuracy is recorded
  for plotting (``test_curves``) and never used for any choice; a tuning grid's points
  (``evaluate_test=False``) never look at test at all;
* every epoch's shuffling, augmentation and dropout draw from generators seeded by
  ``(seed, epoch)``, so a run killed mid-epoch and resumed with ``resume=True``
  finishes with the same metrics as an uninterrupted one (on the CPU);
* a non-finite loss before training is refused; one during training stops the run
  with a message naming the epoch and step.

Under ``accelerate launch`` (or any launcher that sets ``WORLD_SIZE > 1``) the same
code runs data-parallel (:mod:`vptlib.runs.parallel`): every process draws the same batch
order and augmentation, trains on its share of each batch under DDP with the loss
scaled so the synchronised gradient equals the single-process one, evaluates the
whole validation and test splits, and only the main process writes the run record
(:mod:`vptlib.runs.record_writer`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from typing import Any

import pandas as pd

from vptlib import atomic, locks
from vptlib.data.dataset import Data, Preprocess, load_data
from vptlib.errors import TrainingDiverged, UserError
from vptlib.methods import Classifier, build, spec

from . import folders, provenance, record_writer, records
from .config import RunConfig, run_config, validate
from .context import RunContext
from .devices import (
    attention_kernel,
    cast_frozen,
    pick_device,
    resolve_precision,
    seed_everything,
    set_attention,
)
from .evaluation import Scorer
from .parallel import Dist, is_main_process
from .records import RunResult, read_history
from .staging import StagedRun
from .training import fit

__all__ = ["RunConfig", "RunResult", "run", "run_config", "run_seeds", "validate"]


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
    given = folders.ModelAndData(cfg.model, cfg.data, cfg.revision)
    identity = provenance.RunIdentity.of(cfg)
    if reuse and not keep_model:
        done = folders.reuse(cfg, identity, given, device, dist)
        if done is not None:
            return RunResult(done, json.loads((done / records.METRICS).read_text()), read_history(done))
    run_dir = folders.claim_run_dir(cfg, identity, given, resume, dist, progress)
    if (run_dir / records.DIVERGED).is_file():  # the same seeded steps would diverge again
        why = json.loads((run_dir / records.DIVERGED).read_text()).get("reason", "diverged")
        raise TrainingDiverged(f"{why} (recorded by an earlier attempt; delete {run_dir} to train it again)")
    # One process trains (or resumes) a run at a time; the lock dies with its holder.
    try:
        with locks.exclusive(run_dir, f"run {run_dir}") if dist.main else contextlib.nullcontext():
            ctx = RunContext(cfg, run_dir, device, dist, progress, started)
            return _train_and_record(ctx, identity, given, keep_model)
    except BaseException:
        if dist.main:  # failed before its config was written (the model or data would not load)
            folders.discard_if_unused(run_dir)
        raise


def _build(cfg: RunConfig, clip, progress: bool) -> tuple[Data, Preprocess, Classifier]:
    """The run's data (a few-shot subset when asked) and its untrained classifier."""
    prep = Preprocess.from_processor(clip.processor)
    data = load_data(cfg.data, prep, keep_in_memory=True, progress=progress)
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


def _train_and_record(
    ctx: RunContext, identity: provenance.RunIdentity, given: folders.ModelAndData, keep_model: bool
) -> RunResult:
    cfg, run_dir, device, dist, progress, started = (
        ctx.cfg,
        ctx.run_dir,
        ctx.device,
        ctx.dist,
        ctx.progress,
        ctx.started,
    )
    clip = given.clip()
    data, prep, model = _build(cfg, clip, progress)
    model.to(device)
    cast_frozen(model, cfg.precision)  # frozen layers stored in bf16/fp16 once: the same logits, faster steps
    attention = attention_kernel(device, cfg.precision)
    set_attention(model, attention)
    if dist.main and not (run_dir / records.CONFIG).exists():
        recorded = {
            "config_hash": identity.config_hash,
            "code_hash": identity.code_hash,
            "model_fingerprint": given.fingerprint(),
            "model_source": clip.source.record(),
        }
        record_writer.write_config(ctx, model, data, prep, recorded, attention)
    inputs = StagedRun(model, data, cfg, device, given.fingerprint(), dist)
    # What a run costs before it trains (loading, building, staging the inputs): the model
    # and pixels are loaded once per process, so later runs in one process pay little.
    setup_seconds = time.perf_counter() - started
    # A method fitted in closed form on the cached features trains no epochs (CLIP's linear probe).
    views = {"views": inputs.views} if inputs.views is not None else {}
    # Under select="last" nothing is chosen on validation: a closed-form fit never sees it.
    seen = {k: v for k, v in inputs.splits.items() if k != "val" or cfg.select == "val"}
    fitted = model.fit_features({**seen, **views}) if inputs.features else None
    if fitted is not None:
        cfg = dataclasses.replace(cfg, epochs=0)
        fitted["fit_seconds"] = time.perf_counter() - started - setup_seconds
    ctx = ctx.with_config(cfg)  # epochs=0 after a closed-form fit
    state = fit(ctx, inputs)
    if state.best_state is not None:
        model.load_state_dict(state.best_state, strict=False)

    scorer = Scorer(inputs, cfg)
    extra = {**(fitted or {}), **model.finalize(scorer), "setup_seconds": setup_seconds}
    outcome = record_writer.Outcome(state.history, state.best["epoch"], extra, started, scorer.test_looks)
    metrics = record_writer.write_result(ctx, model, inputs, data, outcome)
    dist.barrier()
    return RunResult(run_dir, metrics, pd.DataFrame(state.history), model if keep_model else None)


def run_seeds(config: RunConfig, seeds: list[int], group: str = records.GROUP, **kwargs: Any) -> list[RunResult]:
    """Run ``config`` once per seed and record the group as this method's current result.

    The group file (``runs/<profile>/<method>/group.json``) names exactly the runs the
    results page aggregates, so a rerun with new settings replaces the whole row.
    A run that does not depend on the seed (zero-shot, the L-BFGS linear probe, on the whole
    training split: :meth:`RunConfig.varies_with_seed`) runs once, whatever the seeds: more
    would repeat one result. ``group``: the group file's name (:data:`records.GROUP_OUTSIDE`
    for runs the book did not ask for).
    """
    seeds = list(seeds) if config.varies_with_seed() else list(seeds)[:1]
    if not seeds:
        raise UserError("seeds is empty: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds {seeds} names a seed twice: each seed is one independent run")
    results = [run(dataclasses.replace(config, seed=s), **kwargs) for s in seeds]
    if is_main_process():
        root = folders.method_root(config)
        atomic.write_json(root / group, {"runs": [r.run_dir.name for r in results], "seeds": seeds})
    return results
