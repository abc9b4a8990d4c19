"""What LossGuard reads off the Trainer: the run's settings, its length, the default report interval, its learning
rate, its gradient accumulation (which a ``GradientAccumulationScheduler`` changes at epoch starts), how it keeps its
best model and where its report goes."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import GradientAccumulationScheduler

from lightning_lossguard.detectors.stopped_early import EarlyStop
from lightning_lossguard.detectors.val_loss_rising import ModelSelection
from lightning_lossguard.lightning_classes import lightning_classes
from lightning_lossguard.report.loggers import tensorboard_loggers
from lightning_lossguard.run_layout import RunSettings


def accumulation(trainer: pl.Trainer, module: pl.LightningModule) -> int:
    """Training batches per optimizer step in the current epoch (1 in manual optimization). At the start of a fit a
    ``GradientAccumulationScheduler`` has not set this epoch's value yet: it is asked."""
    if not module.automatic_optimization:
        return 1
    scheduler = lightning_classes(GradientAccumulationScheduler)
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, scheduler):
            return max(1, int(callback.get_accumulate_grad_batches(trainer.current_epoch)))
    return max(1, int(trainer.accumulate_grad_batches))


def report_dir(trainer: pl.Trainer) -> str | None:
    """The folder of the report: beside the first TensorBoard logger's events, where the LossGuard tab looks for it;
    else Lightning's ``log_dir`` (the first logger's). None without a logger. With ``[CSVLogger, TensorBoardLogger]``
    each logger picks its own version folder, and ``log_dir`` is the CSV one's. A collective under DDP: every rank
    calls it, outside any rank-zero branch."""
    if not trainer.loggers:
        return None
    tensorboards = tensorboard_loggers(trainer.loggers)
    if not tensorboards or tensorboards[0] is trainer.loggers[0]:
        return trainer.log_dir
    folder: str = trainer.strategy.broadcast(tensorboards[0].log_dir)
    return folder


def planned_steps(trainer: pl.Trainer) -> int | None:
    total = trainer.estimated_stepping_batches
    return int(total) if isinstance(total, (int, float)) and math.isfinite(total) else None


def batches_left(
    trainer: pl.Trainer, accumulate: int, done_in_epoch: int = 0, steps_per_batch: float | None = None
) -> int | None:
    """Training batches left in the fit, when known, after ``done_in_epoch`` of this epoch's: this epoch's count for
    every epoch left, or fewer where ``max_steps`` ends the fit first.

    Counted in batches, not from Lightning's ``estimated_stepping_batches`` times the accumulation: a fit starts
    before a ``GradientAccumulationScheduler`` sets its factor (the estimate then counts one batch a step), and a
    loader reloaded every epoch (``reload_dataloaders_every_n_epochs``) may change its length. ``max_steps`` counts
    ``global_step``, one per ``accumulate`` batches in automatic optimization; in manual optimization every
    optimizer's step counts (a GAN's two make 2 a batch): ``steps_per_batch`` as measured so far, and until then
    each optimizer is taken to step once a batch."""
    if planned_steps(trainer) is None:  # infinite, or an iterable without max_steps; also sets the loader up
        return None
    ends: list[float] = []
    if trainer.max_steps != -1:
        steps = trainer.max_steps - trainer.global_step
        if getattr(trainer.lightning_module, "automatic_optimization", True):
            ends.append(steps * accumulate)
        else:  # the fit stops at the first batch that takes global_step to max_steps
            ends.append(math.ceil(steps / (steps_per_batch or max(1, len(trainer.optimizers)))))
    per_epoch = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs != -1 and math.isfinite(per_epoch):
        ends.append(per_epoch * (max(trainer.max_epochs, 1) - trainer.current_epoch) - done_in_epoch)
    return max(0, int(min(ends))) if ends else None


def batches_done_in_epoch(trainer: pl.Trainer) -> int | None:
    """This epoch's training batches so far, the one under way included (None where the loop cannot be read)."""
    try:
        return int(trainer.fit_loop.epoch_loop.batch_idx) + 1
    except (AttributeError, TypeError):
        return None


def batches_resumed_in_epoch(trainer: pl.Trainer) -> int:
    """At a fit's start: the batches of the current epoch that a fit resumed from a mid-epoch checkpoint already
    ran (the epoch goes on from there), else 0. A checkpoint from an epoch's end leaves the finished epoch's count
    in the loop, which the next epoch resets: only a count strictly inside the epoch is a mid-epoch resume."""
    done = batches_done_in_epoch(trainer) or 0
    return done if 0 < done < trainer.num_training_batches else 0


def run_settings(trainer: pl.Trainer) -> RunSettings:
    """What the run already does (optimizers, momentum, clipping, schedulers): remedies must not repeat it."""
    momentum = 0.0
    adaptive = False
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            momentum = max(momentum, float(group.get("momentum", 0.0) or 0.0))
            betas = group.get("betas")
            if isinstance(betas, (tuple, list)) and betas:
                momentum = max(momentum, float(betas[0]))
                adaptive = True
            if "alpha" in group or "lr_decay" in group or "initial_accumulator_value" in group:
                adaptive = True  # RMSprop, Adagrad
    clip = trainer.gradient_clip_val
    # None means Lightning's default, which is clipping by norm.
    norm_clipping = str(trainer.gradient_clip_algorithm or "norm").lower().endswith("norm")
    batches = trainer.num_training_batches
    return RunSettings(
        optimizers=tuple(type(o).__name__ for o in trainer.optimizers),
        momentum=momentum,
        adaptive=adaptive,
        scheduler=bool(trainer.lr_scheduler_configs),
        clip_val=float(clip) if clip and norm_clipping else None,
        clip_value=float(clip) if clip and not norm_clipping else None,
        accumulate=max(1, int(trainer.accumulate_grad_batches)),
        manual=not getattr(trainer.lightning_module, "automatic_optimization", True),
        batches_per_epoch=int(batches) if isinstance(batches, (int, float)) and math.isfinite(batches) else None,
        weight_dtype=_half_weights(trainer.lightning_module),
    )


def _half_weights(module: pl.LightningModule | None) -> str:
    """The 16-bit type most trainable parameter tensors are stored in ("" when most are not 16-bit, or there is no
    module yet). Counted by tensors, not elements: a lazy module's parameters have a type before they have a size."""
    types = [p.dtype for p in module.parameters() if p.requires_grad] if module is not None else []
    half = [t for t in types if t in (torch.bfloat16, torch.float16)]
    if not types or 2 * len(half) <= len(types):
        return ""
    return max(("bfloat16", "float16"), key=lambda name: half.count(getattr(torch, name)))


def model_selection(trainer: pl.Trainer) -> dict[str, ModelSelection]:
    """Per monitored metric, how the run keeps its best model: a ``ModelCheckpoint`` that keeps the lowest
    (``mode="min"``, ``save_top_k`` not 0) and an ``EarlyStopping`` that stops on it (``mode="min"``, its patience).
    Both packages' callbacks, found by the Trainer's own lists."""
    kept = {monitor for monitor, mode in _checkpoints_keeping(trainer) if mode == "min"}
    stops = {
        str(stopper.monitor): int(stopper.patience)
        for stopper in trainer.early_stopping_callbacks
        if stopper.monitor and stopper.mode == "min"
    }
    return {name: ModelSelection(name in kept, stops.get(name)) for name in kept | set(stops)}


def checkpointed_metrics(trainer: pl.Trainer) -> list[str]:
    """The metrics whose best a ``ModelCheckpoint`` keeps (``save_top_k`` not 0), in either mode: a run that keeps
    its most accurate epoch selects its model on the accuracy, not on the loss."""
    return [monitor for monitor, _ in _checkpoints_keeping(trainer)]


def _checkpoints_keeping(trainer: pl.Trainer) -> list[tuple[str, str | None]]:
    """(metric, mode) of each checkpoint that keeps a metric's best (``save_top_k`` not 0); a custom Checkpoint may
    monitor nothing."""
    found = []
    for checkpoint in trainer.checkpoint_callbacks:
        monitor = getattr(checkpoint, "monitor", None)
        if monitor and getattr(checkpoint, "save_top_k", 1) != 0:
            found.append((str(monitor), getattr(checkpoint, "mode", None)))
    return found


def stopped_early(trainer: pl.Trainer) -> dict[str, EarlyStop]:
    """Per metric, an ``EarlyStopping`` that ran out of patience and so ended the fit: its count of evaluations
    without a new best reached its patience (a stop on a threshold or a non-finite value is not this), waiting for a
    new lowest (``mode="min"``) or a new highest (``mode="max"``). Read at the end of a fit; both packages'
    callbacks."""
    return {
        str(stopper.monitor): EarlyStop(int(stopper.patience), stopper.mode == "max")
        for stopper in trainer.early_stopping_callbacks
        if stopper.monitor and 0 < stopper.patience <= stopper.wait_count  # its mode is "min" or "max": it checks
    }


def early_stopping_metrics(trainer: pl.Trainer) -> list[str]:
    """The metrics the fit's ``EarlyStopping`` callbacks watch (their numbers are kept for the judgement at a stop)."""
    return [str(stopper.monitor) for stopper in trainer.early_stopping_callbacks if stopper.monitor]


def _param_groups(trainer: pl.Trainer) -> list[dict[str, Any]]:
    """The first optimizer's parameter groups ([] without an optimizer)."""
    try:
        return trainer.optimizers[0].param_groups  # type: ignore[no-any-return]
    except (IndexError, AttributeError):
        return []


def first_group(trainer: pl.Trainer) -> dict[str, Any] | None:
    """The first optimizer's first parameter group (its ``lr`` is read each batch, a dict lookup)."""
    groups = _param_groups(trainer)
    return groups[0] if groups else None


def step_counter(trainer: pl.Trainer) -> Any | None:
    """The progress record whose ``completed`` is ``trainer.global_step`` (None when it cannot be found, or does not
    agree now). ``trainer.global_step`` walks five properties (~1 µs warm, several times that on the cold cache a
    step leaves); the record is one attribute read, and the plain-batch path reads the step on every batch."""
    try:
        loop = trainer.fit_loop.epoch_loop
        if getattr(trainer.lightning_module, "automatic_optimization", True):
            counter = loop.automatic_optimization.optim_progress.optimizer.step.total
        else:
            counter = loop.manual_optimization.optim_step_progress.total
        return counter if counter.completed == trainer.global_step else None
    except AttributeError:  # another Lightning's loops: the property is read instead
        return None


def learning_rates(trainer: pl.Trainer) -> tuple[float, float]:
    """The largest and the smallest learning rate of the first optimizer's parameter groups, as host floats (a
    tensor LR would need a sync: left out; NaN for both when none is a number). The largest is the run's rate as a
    message quotes it: under layer-wise decay the first group is the embeddings', ~30x under the configured one."""
    rates = [float(g["lr"]) for g in _param_groups(trainer) if isinstance(g.get("lr"), (int, float))]
    return (max(rates), min(rates)) if rates else (math.nan, math.nan)


MIN_REPORTS = 20
"""A short run (a CI smoke run) still gets about this many reports by default, every 10 steps at the most."""

MIN_REPORT_EVERY = 10
"""By default reports come every 10 optimizer steps at the most, whatever ``log_every_n_steps`` says: Lightning
asks runs of short epochs to lower it (often to 1), and a report per step costs more than the step. LossGuard's
scalars are per step whatever the interval; ``report_every`` sets a shorter one explicitly."""


def default_report_every(trainer: pl.Trainer, planned_batches: int | None, accumulate: int) -> int:
    """In optimizer steps: the trainer's ``log_every_n_steps``, shortened for a run of ``planned_batches`` that is
    short so it is judged often enough (its steps counted at the first epoch's ``accumulate``), and never below
    :data:`MIN_REPORT_EVERY`."""
    every = max(MIN_REPORT_EVERY, int(getattr(trainer, "log_every_n_steps", 50)))
    if planned_batches:
        every = min(every, max(MIN_REPORT_EVERY, planned_batches // max(1, accumulate) // MIN_REPORTS))
    return every
