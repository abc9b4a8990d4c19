"""``LossGuard``: the Lightning callback. Thin glue: hooks -> signals -> diagnostician -> reporters.

Per training batch it only takes marks and launches device copies (no host read). Every
``report_every`` optimizer steps it reads the interval back once, judges it, and reports.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelPruning
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.trainer.states import TrainerFn

from lightning_lossguard import options
from lightning_lossguard.alarm import LossGuardAlarm
from lightning_lossguard.coverage import Coverage
from lightning_lossguard.detectors.nonfinite_loss import NonfiniteLoss
from lightning_lossguard.detectors.stalled_training import StalledTraining, last_report
from lightning_lossguard.detectors.stats import median
from lightning_lossguard.diagnosis import Diagnosis, Severity, worst
from lightning_lossguard.diagnostician import Diagnostician, RunLayout
from lightning_lossguard.hook_dispatch import BACKWARD_HOOKS, NO_OP_HOOKS, START_HOOKS, STEP_HOOKS, offer, own_hooks
from lightning_lossguard.lightning_classes import StandaloneCallback, lightning_classes
from lightning_lossguard.monitor import Monitor
from lightning_lossguard.report.console import ConsoleReporter
from lightning_lossguard.report.cost import cost_and_notes, over_budget_note
from lightning_lossguard.report.failure import failure_note
from lightning_lossguard.report.handoff import Handoff
from lightning_lossguard.report.json_report import REPORT_NAME, Gap, write_report
from lightning_lossguard.report.loggers import LoggerReporter, Series
from lightning_lossguard.report.start_notes import overfit_batches_note, returned_loss_notes, start_notes
from lightning_lossguard.run_layout import fused_backward_notes
from lightning_lossguard.signals.batch import leading_rows, loss_of
from lightning_lossguard.signals.budget import (
    GC_SECONDS,
    MIN_REPORTS_UNDER_BUDGET,
    CostBudget,
    CostMeter,
    own_mark,
    own_since,
    watch_gc,
)
from lightning_lossguard.signals.clipping import ClipWatch
from lightning_lossguard.signals.clock import clock_for
from lightning_lossguard.signals.graph import GraphFacts, ParameterReads, read_graph
from lightning_lossguard.signals.memory import allocator_free_mb, device_allocated_mb, host_rss_mb
from lightning_lossguard.signals.module_hooks import (
    ExecutionOrder,
    ForwardHooks,
    LoggingCalls,
    compiled_modules,
    compiled_steps,
)
from lightning_lossguard.signals.parameters import (
    WatchedSet,
    build_layout,
    clean_name,
    gradient_hooked,
    optimizer_parameters_key,
    pruned_note,
    pruned_parameters,
    watched_parameters,
)
from lightning_lossguard.signals.recorder import SignalRecorder
from lightning_lossguard.signals.step_timer import activate, deactivate
from lightning_lossguard.signals.unstepped import UnsteppedParameters
from lightning_lossguard.signals.watchdog import Stall, Watchdog
from lightning_lossguard.signals.window import Window
from lightning_lossguard.strategies import any_rank, gather_for, parameter_sharding, sharding_note
from lightning_lossguard.trainer_settings import (
    accumulation,
    batches_done_in_epoch,
    batches_left,
    batches_resumed_in_epoch,
    checkpointed_metrics,
    default_report_every,
    early_stopping_metrics,
    first_group,
    learning_rates,
    model_selection,
    planned_steps,
    report_dir,
    run_settings,
    step_counter,
    stopped_early,
)

FailOn = Literal["warning", "error"]
SeverityName = Literal["info", "warning", "error"]

_UNSUPPORTED_SHARDING = ("DeepSpeedStrategy",)
"""Strategies whose gradients LossGuard cannot read as whole tensors or DTensor shards."""

_PROGRESS = {"finished": 0, "running": 1, "failed": 2, "alarm": 3}


def _own_time(hook: Callable[..., None]) -> Callable[..., None]:
    """Count the time spent inside ``hook`` as LossGuard's own (the budget's measure): two clock reads."""

    @functools.wraps(hook)
    def timed(self: Any, *args: Any, **kwargs: Any) -> None:
        # own_mark / own_since, inlined: this wrapper runs on every batch's hooks.
        start, collected = time.perf_counter(), GC_SECONDS[0]  # watch_gc() ran at construction
        try:
            hook(self, *args, **kwargs)
        finally:
            self._meter.own_seconds += time.perf_counter() - start - (GC_SECONDS[0] - collected)

    return timed


class LossGuard(Callback, StandaloneCallback):  # both packages' Trainers and LightningCLIs (lightning_classes)
    """Watches gradients, the loss curve and the loss-step time; reports diagnoses with remedies.

    Args:
        fail_on: ``"error"`` or ``"warning"``: a diagnosis at or above this level stops every rank and the fit
            raises :class:`LossGuardAlarm` after the reports are written. ``None`` (default): report only.
        report_every: optimizer steps between reports (the one host read of the buffered signals).
            Default: the trainer's ``log_every_n_steps``, shortened for short runs to about 20 reports per
            run, and never more often than every 10 steps (a ``log_every_n_steps`` of 1 included).
        suppress: diagnosis codes never to report.
        severity: per-code severity overrides, e.g. ``{"loss_plateau": "error"}``.
        thresholds: per-code threshold overrides, e.g. ``{"exploding_gradients": {"spike_factor": 20}}``.
        val_metric: the validation metric watched by ``val_loss_rising`` (the default also takes ``val/loss``,
            ``valid_loss``, ``validation_loss`` and their slash forms: the first one logged).
        verbose: print diagnoses on the console as they happen and a summary at the end.
        time_forward: hook the model's forward to separate the loss time from the forward time (the scalars
            ``training_step`` logs, loss terms among them, are read either way).
        max_update_elements: weights copied on report steps to measure update/weight ratios (0: off).
        name: distinguishes several LossGuard instances (checkpoint state key and report file name).
        monitors: opt-in :class:`~lightning_lossguard.monitor.Monitor` extensions (e.g. output checks).
        stall_timeout: seconds without a completed training step after which ``stalled_training`` is reported,
            with every thread's stack, from a watchdog thread (it never stops the process). ``None`` (default): off.
        budget: the share of the training step's time LossGuard may take (default 0.01: 1%). Over it, gradient
            norms are measured on a stride of steps and, unless ``report_every`` is set, reports come less often
            (see :mod:`lightning_lossguard.signals.budget`); the report says what was adapted. ``None``: no budget,
            gradient norms on every optimizer step and reports at the configured interval, whatever they cost
            (the report still says what that was): to compare two runs step for step, or to debug one.
    """

    def __init__(
        self,
        *,
        fail_on: FailOn | None = None,
        report_every: int | None = None,
        suppress: list[str] | None = None,
        severity: dict[str, SeverityName] | None = None,
        thresholds: dict[str, dict[str, float]] | None = None,
        val_metric: str = "val_loss",
        verbose: bool = True,
        time_forward: bool = True,
        max_update_elements: int = 50_000_000,
        name: str = "lossguard",
        monitors: Sequence[Monitor] | None = None,
        stall_timeout: float | None = None,
        budget: float | None = 0.01,
    ) -> None:
        fail_on = options.choice("fail_on", fail_on, [None, "warning", "error"])
        self.fail_on = Severity(fail_on) if fail_on else None
        self.report_every = options.whole("report_every", report_every, 1, 10**9, allow_none=True)
        self.suppress = options.codes("suppress", suppress)
        self.severity_overrides = options.severities(severity)
        self.thresholds = options.threshold_overrides(thresholds)
        self.val_metric = options.text("val_metric", val_metric)
        self.verbose = options.flag("verbose", verbose)
        self.time_forward = options.flag("time_forward", time_forward)
        self.max_update_elements = int(options.whole("max_update_elements", max_update_elements, 0, 2**62) or 0)
        self.name = options.report_name(name)
        self.stall_timeout = options.seconds("stall_timeout", stall_timeout)
        self.budget = options.number("budget", budget, 0.0, 1.0, allow_none=True, open_low=True)
        if monitors is not None and not isinstance(monitors, (list, tuple)):
            raise TypeError(f"monitors must be a list of lightning_lossguard.Monitor instances; got {monitors!r}.")
        self.monitors = list(monitors or [])
        for monitor in self.monitors:
            if not isinstance(monitor, Monitor):
                raise TypeError(f"monitors must be lightning_lossguard.Monitor instances; got {monitor!r}.")
            for code in monitor.codes:
                options.known_code("monitors", code)
        self._every_batch_monitors, self._sampled_monitors = self._split_monitors()
        self._diagnostician = self._new_diagnostician()  # validates threshold names and ranges now
        self._notes: list[str] = []
        self.coverage = Coverage()
        self.fits: list[dict[str, Any]] = []  # one entry per fit of this record: {"status", "global_step"}
        self._report_path: str | None = None
        self._handoff = Handoff()  # a fit run in child processes tells this object where its report is
        self._reset_run()
        offer(self, own_hooks(self, NO_OP_HOOKS, Callback), False)
        self._backward_hooks = own_hooks(self, BACKWARD_HOOKS, LossGuard)
        self._step_hooks = own_hooks(self, STEP_HOOKS, LossGuard)
        self._start_hooks = own_hooks(self, START_HOOKS, LossGuard)

    # -- public ---------------------------------------------------------------------------------------
    @property
    def diagnoses(self) -> list[Diagnosis]:
        """Every diagnosis of this run's record (all fits into the same log directory), oldest first."""
        self._adopt()
        return list(self._diagnostician.diagnoses)

    @property
    def gaps(self) -> list[Gap]:
        """What LossGuard should have watched and could not (empty: coverage complete)."""
        self._adopt()
        return list(self.coverage.gaps)

    @property
    def notes(self) -> list[str]:
        """Signals that were unavailable or judged only in part, and why (the report's notes)."""
        self._adopt()
        return self._notes

    @property
    def report_path(self) -> str | None:
        """The ``lossguard.json`` of the latest fit (None: no log directory, or not rank 0)."""
        self._adopt()
        return self._report_path

    def _adopt(self) -> None:
        """In the process that launched a fit run in child processes (ddp_spawn, ddp_notebook), where no hook of
        this object ran: take what rank 0's report says (a report left since the last time asked, if any)."""
        if (report := self._handoff.take()) is None:
            return
        self._diagnostician.diagnoses[:] = report.diagnoses
        self._notes = list(report.notes)
        self.coverage = Coverage()
        self.coverage.gaps = list(report.gaps)
        self._report_path = str(report.path)

    @property
    def state_key(self) -> str:
        # Lightning asks for it on every hook call: build the string once.
        if not hasattr(self, "_state_key"):
            self._state_key = self._generate_state_key(name=self.name, val_metric=self.val_metric)
        return self._state_key

    # -- setup ----------------------------------------------------------------------------------------
    def _new_diagnostician(self) -> Diagnostician:
        return Diagnostician(self.suppress, self.severity_overrides, self.thresholds, self.val_metric)

    def _reset_run(self) -> None:
        self._recorder: SignalRecorder | None = None
        self._watched = WatchedSet((), (), ())
        self._layout = RunLayout()
        self._forward: ForwardHooks | None = None
        self._logging: LoggingCalls | None = None
        self._forward_seen = False  # a hooked forward call happened in this fit (kept after the hooks are removed)
        self._backward_seen = False  # a backward ran through Lightning on a timed batch (the loss's time is measured)
        self._order: ExecutionOrder | None = None
        self._compiled_steps = False  # Lightning compiled the module's steps: no module hooks (they would be traced)
        self._graph_roots: list[Any] = []
        self._reads = ParameterReads()  # lookup tables and sliced linear outputs the first batch's graph showed
        self._batches = 0  # training batches seen in this fit: the report and sampling clock
        self._first_sample = 0  # the batch whose units are the run's first sample (1 when lazy modules build late)
        self._batch_step = 0
        self._report_batches = 1
        self._report_anchor = 0  # reports come every _report_batches batches from here (where it last changed)
        self._watched_key: tuple[object, ...] | None = None  # the optimizers' parameters when last watched
        self._before_report = False  # the batch under way is the last before a report
        self._backward_work = False  # the backward hooks have something to do in the batch under way
        self._step_work = False  # and so has the optimizer-step hook
        # Under autograd's anomaly mode a NaN stops the fit inside backward, before the batch ends: every batch's loss
        # is held (a reference) so that the batch that raised is judged too. Anomaly mode costs far more per step.
        self._anomaly = False
        self._failure = ""  # the note of a fit that stopped on an exception
        self._offered: tuple[bool, bool] | None = None  # (backward, step) hooks as last offered to Lightning
        self._start_hidden = False  # the next batch is plain: its start was prepared at the last batch's end
        self._sample_gradients = False  # its gradients are measured (the budget's stride)
        self._timed_batch = False  # it is timed (the budget's stride): the sampled monitors see it
        self._tripwire_every = 0  # batches between NaN checks while the budget stretches the reports (0: none)
        self._sampling = False
        self._stepped_batch = -1  # the batch whose optimizer step was measured (automatic optimization)
        self._clip_watch: ClipWatch | None = None  # manual optimization: gradients read before the module clips
        self._unstepped: UnsteppedParameters | None = None  # parameters that train but that no optimizer holds
        self._read_before_clip: dict[torch.optim.Optimizer, int] = {}  # optimizer -> batch read at its clip
        self._check_leftover = False
        # After the fit's first optimizer step and after each report: check the gradients where the next
        # accumulation window starts (piled-up gradients explode within a report interval or two).
        self._leftover_due = False
        self._follow_pruning = False  # ModelPruning, or a model pruned before the fit: which weights are masked
        self._accumulate = 1
        self._fitting = False
        self._finished = False
        self._broken = False
        self._losses_seen = 0
        self._automatic = True  # automatic optimization: a batch without a loss is one Lightning skipped
        self._start_step = 0  # global_step when the fit started: the steps its batches took (manual optimization)
        self._gradient_rows = 0
        self._console = ConsoleReporter(enabled=self.verbose)
        self._loggers: LoggerReporter | None = None
        self._scaler: Any = None
        self._device = torch.device("cpu")
        self._watchdog: Watchdog | None = None
        self._stalls: list[Diagnosis] = []  # stalls that ended since the last report: fail_on decides on them there
        self._budget: CostBudget | None = None
        self._lr_group: dict[str, Any] | None = None  # re-read at each report (schedulers swap nothing, but be safe)
        self._step_counter: Any = None  # trainer.global_step in one attribute read (checked at each report)
        self._meter = CostMeter()  # LossGuard's own time since the last report (its hooks, reports included)
        watch_gc()  # the hooks read the collector's clock without a call
        self._since_report = 0  # the batch count at the last report

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # A collective under DDP: every rank, exactly once, outside any rank-zero branch.
        log_dir = report_dir(trainer)
        file_name = REPORT_NAME if self.name == "lossguard" else f"lossguard-{self.name}.json"
        path = os.path.join(log_dir, file_name) if log_dir else None
        if path != self._report_path or not self.fits:
            self._new_record()  # a new log directory: a new record (a resume reloads its state right after this)
        self._report_path = path
        if (written := self._report_file(trainer)) is not None:
            self._handoff.leave(written)
        self._reset_run()
        offer(self, self._start_hooks, True)
        # A tqdm bar draws with "\r" and no newline: the console clears it around each line it prints.
        self._console = ConsoleReporter(enabled=self.verbose, progress_bar=trainer.progress_bar_callback)

    def _new_record(self) -> None:
        previous = self._diagnostician.scale_shift
        levels = previous.levels() if previous is not None else (math.nan, math.nan)
        self._diagnostician = self._new_diagnostician()
        current = self._diagnostician.scale_shift
        if current is not None and all(math.isfinite(v) for v in levels):
            current.remember_previous_fit(*levels)
        self._notes = []
        self.coverage = Coverage()
        self.fits = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fitting = True
        self.fits.append({"status": "running", "global_step": trainer.global_step})
        if len(self.fits) > 1 and trainer.ckpt_path is None:  # no checkpoint: the optimizer starts over
            self._diagnostician.fit_restarted(trainer.global_step)
        try:
            self._start(trainer, pl_module)
        except Exception as error:  # never break training because of monitoring
            self._internal_error("start", error)

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._device = pl_module.device
        self._automatic = pl_module.automatic_optimization
        self._anomaly = torch.is_anomaly_enabled()  # Trainer(detect_anomaly=True) turns it on around the fit loop
        self._failure = ""
        self._start_step = trainer.global_step
        self._leftover_due = pl_module.automatic_optimization  # manual optimization zeroes gradients when it likes
        accumulate = accumulation(trainer, pl_module)
        self._accumulate = accumulate
        self._recorder = SignalRecorder([], clock_for(self._device), loss_scale=accumulate)
        activate(self._recorder.timer)
        planned = batches_left(trainer, accumulate, batches_resumed_in_epoch(trainer))
        self._report_batches = (self.report_every or default_report_every(trainer, planned, accumulate)) * accumulate
        self._budget = CostBudget(
            math.inf if self.budget is None else self.budget,
            self._report_batches,
            adaptive_reports=self.report_every is None,
            accumulate=accumulate,
            min_reports=MIN_REPORTS_UNDER_BUDGET,
            planned_batches=planned or 0,
            # Every rank must sample and report at the same steps: the budget adapts in single-process runs only.
            adapt=trainer.world_size == 1,
        )
        self._lr_group = first_group(trainer)
        self._step_counter = step_counter(trainer)
        self._diagnostician.model_selection = model_selection(trainer)
        self._diagnostician.checkpointed = checkpointed_metrics(trainer)
        pruning_callback = lightning_classes(ModelPruning)
        pruning = any(isinstance(c, pruning_callback) for c in trainer.callbacks)  # type: ignore[attr-defined]
        self._follow_pruning = pruning or bool(pruned_parameters(pl_module))
        plugin = trainer.precision_plugin
        self._scaler = plugin.scaler if isinstance(plugin, lightning_classes(MixedPrecision)) else None
        strategy = type(trainer.strategy).__name__
        if strategy in _UNSUPPORTED_SHARDING:
            self._gap(
                "gradients",
                f"{strategy} keeps gradients in its own partitioned buffers, which LossGuard cannot read: gradient "
                "diagnoses are off (loss-curve, validation and step-time diagnoses work).",
            )
        else:
            self._watch(trainer, pl_module)
            self._unstepped = UnsteppedParameters(pl_module, trainer.optimizers)
            if not pl_module.automatic_optimization and self._scaler is None:  # AMP: still scaled at the clip
                self._clip_watch = ClipWatch(trainer.precision_plugin, self._before_clip)
        self._logging = LoggingCalls(pl_module, self._recorder.timer, self._recorder.capture_logged)
        self._compiled_steps = compiled_steps(pl_module)
        if self.time_forward and not self._compiled_steps:
            self._forward = ForwardHooks(pl_module, self._recorder.timer)
        self._order = ExecutionOrder(pl_module, hooked=not self._compiled_steps)
        self._every_batch_monitors, self._sampled_monitors = self._split_monitors()  # self.monitors may have changed
        for monitor in self.monitors:
            monitor.setup(pl_module, self._device)
        if trainer.is_global_zero:
            self._loggers = LoggerReporter(trainer.loggers)
            self._loggers.start()
        self._start_notes(trainer, pl_module)
        if self.stall_timeout is not None and "stalled_training" not in self.suppress:
            timer = self._recorder.timer
            self._watchdog = Watchdog(self.stall_timeout, timer.where, lambda stall: self._on_stall(trainer, stall))
            self._watchdog.start()

    def _watch(self, trainer: pl.Trainer, module: pl.LightningModule, order: list[str] | None = None) -> None:
        """(Re)read the watched parameters and the layout; the recorder's rows must have been drained."""
        assert self._recorder is not None
        key = optimizer_parameters_key(trainer.optimizers)
        if order is None and key == self._watched_key:
            return  # the report-time re-check: nothing was added, frozen, unfrozen or cast since the last one
        self._watched_key = key
        watched = watched_parameters(module, trainer.optimizers)
        for name, reason in watched.unreadable:
            self._gap("gradients", f"{name}: {reason}")
        first = not self._watched.params and not self._watched.pending
        changed = watched.signature != self._watched.signature
        self._watched = watched
        if first and watched.pending and not self._batches:
            # Lazy modules get their weights in the first forward: the run's first sample of units waits for them.
            self._first_sample = 1
        if changed:
            sharding = parameter_sharding(trainer.strategy, watched.params)
            self._recorder.watch(watched.params, sharding)
            if note := sharding_note(trainer.strategy, watched.names, sharding):
                self._note(note)
        if changed or order is not None:
            layout = build_layout(module, watched, order if order is not None else ())
            self._layout = RunLayout.build(
                watched, layout, None, run_settings(trainer), planned_steps(trainer), self._scaler is not None
            ).with_tables(*self._reads.positions(watched.params))
            if changed and not first:  # not at the start of a fit: a resumed state belongs to the same model
                self._diagnostician.new_layout()

    def _finish_first_batch(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any) -> None:
        """After the first batch: the execution order, the gradient paths and lazily built parameters are known,
        and how many samples the first loss, the one before any update, averaged over."""
        order = self._order.stop() if self._order is not None else []
        self._order = None
        if self._forward is not None:
            self._forward.prune()
        if self._recorder is None or any(
            g.signal == "gradients" and "partitioned" in g.reason for g in self.coverage.gaps
        ):
            return
        self._watch(trainer, module, order)
        index = {id(p): i for i, p in enumerate(self._watched.params)}
        outside = self._unstepped.ids() if self._unstepped else []  # in no optimizer: does a trained one read them?
        graph, read = GraphFacts(None), frozenset[int]()
        if index:
            indexed = {**index, **{key: len(index) + j for j, key in enumerate(outside)}}
            graph, read = read_graph(self._graph_roots, indexed).split(len(index))
        if self._unstepped and graph.upstream is not None:
            self._unstepped.read_by_trained({outside[j] for j in read})
        self._graph_roots = []
        self._reads = ParameterReads.of(graph, self._watched.params)
        layout = self._layout.with_paths(graph.upstream).with_tables(*self._reads.positions(self._watched.params))
        self._layout = dataclasses.replace(layout, first_batch_rows=leading_rows(batch))
        vanishing = self._diagnostician.detectors.get("vanishing_gradients")
        if vanishing is not None:
            compiled = [clean_name(name) for name in compiled_modules(module)]
            for note in fused_backward_notes(self._layout, compiled, vanishing.thresholds.min_layers):  # type: ignore[attr-defined]
                self._note(note)

    def _start_notes(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        notes = start_notes(
            fast_dev_run=bool(getattr(trainer, "fast_dev_run", False)),
            has_logger=bool(trainer.loggers),
            has_log_dir=bool(self._report_path),
            no_parameters=not self._watched.params and not self._watched.pending and not self.coverage.gaps,
            manual=not module.automatic_optimization,
            loggers_without_tensorboard=self._loggers.without_tensorboard() if self._loggers is not None else (),
            gradient_hooked=gradient_hooked(self._watched.params),
            watched=len(self._watched.params),
        )
        overfit = getattr(trainer, "overfit_batches", 0)
        self._diagnostician.validation_off = None
        self._diagnostician.stopped_by = ""  # per fit: a later fit is not ended by the earlier one's stop
        if overfit and "val_loss_rising" not in self.suppress:
            self._diagnostician.validation_off = overfit_batches_note(overfit)
            notes.append(self._diagnostician.validation_off)
        for note in notes:
            self._note(note)

    # -- per-step path: marks and device copies only ----------------------------------------------------
    @_own_time
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._backward_work = self._step_work = False
        if self._recorder is None or self._broken:
            return
        try:
            step = self._global_step(trainer)  # after an optimizer step global_step moves on
            if batch_idx == 0:
                self._follow_epoch(trainer, pl_module)
            # After a report, the first batch of an accumulation window starts from zeroed gradients: check it.
            # Lightning zeroes them where the batch index within the epoch is a multiple of the accumulation (an
            # epoch's last, partial window steps too): a count of batches across epochs can fall mid-window. Before
            # the fit's first optimizer step there is nothing to pile up.
            self._check_leftover = self._leftover_due and batch_idx % self._accumulate == 0 and step > self._start_step
            self._leftover_due = self._leftover_due and not self._check_leftover
            before_report = self._report_due(self._batches + 1)
            timed, sample = (
                (True, True) if self._budget is None else self._budget.samples(self._batches, step, before_report)
            )
            self._set_up_batch(step, before_report, timed, sample)
        except Exception as error:
            self._internal_error("on_train_batch_start", error)

    def _set_up_batch(self, step: int, before_report: bool, timed: bool, sample: bool) -> None:
        """The batch about to start at ``step``: its marks, and which of the hooks Lightning calls in it."""
        assert self._recorder is not None
        self._batch_step, self._before_report, self._sample_gradients = step, before_report, sample
        self._timed_batch = timed
        self._recorder.begin_batch()
        if timed:
            self._recorder.timer.batch_start(step)
        else:
            self._recorder.timer.batch_untimed(step)
        if self._forward is not None and self._batches > 0:
            self._forward.timing(timed)
        clearing = self._recorder.watching_clearing  # manual optimization, after a report
        self._backward_work = timed or self._check_leftover or self._order is not None or clearing
        self._step_work = timed or sample or self._batches <= self._first_sample or clearing
        offered = (self._backward_work or self._anomaly, self._step_work)
        if offered != self._offered:  # most batches in a row hide the same hooks: nothing to change then
            offer(self, self._backward_hooks, offered[0])
            offer(self, self._step_hooks, offered[1])
            self._offered = offered

    def _follow_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """At an epoch start. A ``GradientAccumulationScheduler`` changes the accumulation: Lightning divides the
        losses by the new factor and zeroes the gradients on the new windows, and the report interval keeps its
        optimizer steps (an epoch starts a window: counted from here, reports end one). A reloaded loader may
        change the epoch's length: the budget spreads its reports over what is left of the run as it now stands."""
        if self._recorder is None:
            return
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        if pl_module.automatic_optimization and accumulate != self._accumulate:
            self._accumulate = accumulate
            self._recorder.change_loss_scale(accumulate)
            if self._budget is not None:
                self._budget.change_accumulation(accumulate)
                self._take_budget_interval(self._budget)
            self._layout = dataclasses.replace(self._layout, settings=run_settings(trainer))
        self._replan(trainer, 0)

    def _replan(self, trainer: pl.Trainer, done_in_epoch: int | None) -> None:
        """Hand the budget the run's length as it now stands. In manual optimization ``max_steps`` ends the run
        after as many batches as its optimizers' steps allow: the steps a batch takes are measured as it goes."""
        if done_in_epoch is None or self._budget is None:
            return
        steps_per_batch = None
        if not self._automatic and self._batches > 0:
            steps_per_batch = (trainer.global_step - self._start_step) / self._batches or None
        left = batches_left(trainer, self._accumulate, done_in_epoch, steps_per_batch)
        if left is not None:
            self._budget.replan(self._batches + left)

    # The backward hooks have work on timed batches, the first one and the one after a report only: on the others
    # they are hidden from Lightning (``hook_dispatch``), and return at once, unwrapped, if called all the same.
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if self._anomaly and self._recorder is not None:
            self._recorder.hold_loss(self._batches, self._batch_step, loss)
        if self._backward_work:
            self._before_backward(loss)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._backward_work:
            self._after_backward()

    @_own_time
    def _before_backward(self, loss: torch.Tensor) -> None:
        if self._recorder is None or self._broken:
            return
        self._backward_seen = True
        try:
            if self._order is not None and loss.grad_fn is not None:
                self._graph_roots.append(loss.grad_fn)  # first batch only: read once the batch is over
            if self._check_leftover:
                self._check_leftover = False
                self._recorder.sample_leftover()
            if self._recorder.watching_clearing:
                self._recorder.check_clearing()
            self._recorder.timer.backward_start()
        except Exception as error:
            self._internal_error("on_before_backward", error)

    @_own_time
    def _after_backward(self) -> None:
        if self._recorder is not None and not self._broken:
            try:
                self._recorder.timer.backward_end()
            except Exception as error:
                self._internal_error("on_after_backward", error)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._step_work:  # as the backward hooks: nothing to do on an untimed, unsampled batch
            self._before_optimizer_step(trainer, optimizer, pl_module.automatic_optimization)

    @_own_time
    def _before_optimizer_step(self, trainer: pl.Trainer, optimizer: torch.optim.Optimizer, automatic: bool) -> None:
        if self._recorder is None or self._broken:
            return
        try:
            if automatic and self._evaluated_again():
                return
            # Gradients here are unscaled (AMP) and not yet clipped: the pre-clip norm (on the budget's stride).
            # The stride counts optimizer steps (the step the batch started at), not micro-batches: under
            # gradient accumulation only every k-th batch steps.
            before_report = self._before_report  # the last batch before a report: its samples are always taken
            if self._sample_gradients and not self._was_read_before_clip(optimizer):
                mark = own_mark()
                self._recorder.record_gradients(self._batch_step, optimizer)
                self._meter.gradient_seconds += own_since(mark)
            if self._batches == self._first_sample or before_report:
                # The first batch (how the run starts) and the batch before each report are sampled.
                mark = own_mark()
                self._sampling = True
                units = [i for i, u in enumerate(self._layout.param_units) if u]
                axes = {i: a for i, a in enumerate(self._layout.param_unit_axes) if a}
                self._recorder.sample_before_step(
                    self._batch_step, optimizer, units, self.max_update_elements, axes, automatic
                )
                self._meter.interval_seconds += own_since(mark)
            if not automatic:  # the module zeroes gradients itself: checked from a report batch's step to the next
                self._recorder.end_clearing(optimizer)
                if before_report:  # a timed batch: the backwards after this step are seen too
                    index = next((i for i, o in enumerate(trainer.optimizers) if o is optimizer), -1)
                    self._recorder.watch_clearing(optimizer, index)
            self._recorder.timer.optimizer_start()
        except Exception as error:
            self._internal_error("on_before_optimizer_step", error)

    @_own_time
    def _before_clip(self, optimizer: Any) -> None:
        """Manual optimization, the module about to clip ``optimizer``'s gradients: on a sampled batch, its
        gradient row is taken here, before clipping (see :mod:`~lightning_lossguard.signals.clipping`)."""
        if not (self._step_work and self._sample_gradients) or self._recorder is None or self._broken:
            return
        try:
            if isinstance(optimizer, lightning_classes(LightningOptimizer)):  # what self.optimizers() hands out
                optimizer = optimizer.optimizer
            if self._was_read_before_clip(optimizer):
                return  # clipped twice before its step: the first read holds the unclipped norms
            mark = own_mark()
            self._recorder.record_gradients(self._batch_step, optimizer)
            self._meter.gradient_seconds += own_since(mark)
            self._read_before_clip[optimizer] = self._batches
        except Exception as error:
            self._internal_error("clip_gradients", error)

    def _was_read_before_clip(self, optimizer: torch.optim.Optimizer) -> bool:
        return self._read_before_clip.get(optimizer) == self._batches

    def _evaluated_again(self) -> bool:
        """Whether this batch's optimizer step was already measured. Automatic optimization has one optimizer,
        stepping once per batch, and Lightning calls this hook after every evaluation of the step's closure: LBFGS
        evaluates it several times in one step (its line search), sharpness-aware minimisation twice. The first
        evaluation holds the step's gradients and the weights before it; a later one's weights can be the step's
        result already (the update ratio read 0 under LBFGS)."""
        again = self._stepped_batch == self._batches
        self._stepped_batch = self._batches
        return again

    @_own_time
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._recorder is None or self._broken:
            return
        try:
            if self._start_hidden and self._plain_batch_end(trainer, outputs):
                return
            self._recorder.timer.batch_end()
            loss, terms = loss_of(outputs)
            if loss is not None:
                self._recorder.record_loss(self._batch_step, loss, terms, self._learning_rate())
                self._losses_seen += 1
            elif self._automatic:
                self._recorder.skip_batch(self._batch_step)
            if self._sampling:
                mark = own_mark()
                self._recorder.sample_after_step()
                self._sampling = False
                self._meter.interval_seconds += own_since(mark)
            for monitor in self._every_batch_monitors:
                monitor.on_train_batch_end(outputs, batch, self._batch_step)
            if self._sampled_monitors and self._timed_batch:
                self._feed_sampled_monitors(outputs, batch)
            self._batches += 1
            if self._watchdog is not None:
                self._beat(trainer)
            if self._batches == 1:
                self._finish_first_batch(trainer, pl_module, batch)
        except Exception as error:
            self._internal_error("on_train_batch_end", error)
            self._hide_start(False)
            return
        if self._report_due(self._batches):
            mark = own_mark()
            self._report(trainer, pl_module)
            self._meter.interval_seconds += own_since(mark)
        elif self._tripwire_every and self._batches % self._tripwire_every == 0:
            self._tripwire(trainer, pl_module)
        self._hide_start(self._prepare_plain_batch(trainer))

    def _split_monitors(self) -> tuple[list[Monitor], list[Monitor]]:
        """The monitors that see every training batch (they keep every batch on the full path), and those that see
        the budget's timed batches only (:attr:`Monitor.every_batch` False)."""
        return [m for m in self.monitors if m.every_batch], [m for m in self.monitors if not m.every_batch]

    def _feed_sampled_monitors(self, outputs: Any, batch: Any) -> None:
        """The monitors that see timed batches only (:attr:`Monitor.every_batch`): their time is planned with the
        gradient passes, which come on the same stride."""
        mark = own_mark()
        for monitor in self._sampled_monitors:
            monitor.on_train_batch_end(outputs, batch, self._batch_step)
        self._meter.monitor_seconds += own_since(mark)
        self._meter.monitor_batches += 1

    def _plain_batch_end(self, trainer: pl.Trainer, outputs: Any) -> bool:
        """A plain batch ended (set up by :meth:`_prepare_plain_batch`) and the next one is plain too: keep the
        loss and set the next batch up in a few calls. Most batches end here, on a cold cache, where every call
        counts (a plain batch cost ~30 us on a 5 ms step through the full path). What made this batch plain still
        holds for the next (past the first sample, no clearing check); what can change is checked: a report or
        a tripwire due, the stride's sample, a leftover check after a report, a loss with terms or none. False,
        with nothing changed, when anything else is due: the full path runs."""
        assert self._recorder is not None and self._budget is not None
        batches = self._batches + 1
        if self._every_batch_monitors or self._leftover_due or self._report_due(batches):
            return False
        if self._tripwire_every and batches % self._tripwire_every == 0:
            return False
        loss, terms = loss_of(outputs)
        step = self._global_step(trainer)
        if loss is None or terms is not None or self._timed_or_sampled(batches, step):
            return False
        if not self._recorder.record_plain_loss(self._batch_step, loss, self._learning_rate()):
            return False
        self._recorder.timer.untimed_batch_end(step)
        self._losses_seen += 1
        self._batches = batches
        self._batch_step = step
        return True

    def _timed_or_sampled(self, batches: int, step: int) -> bool:
        """Whether the batch after ``batches`` training batches, at ``step``, is timed or has its gradients sampled:
        the stride's, or the last one before a report (its report-step samples)."""
        assert self._budget is not None
        return any(self._budget.samples(batches, step, self._report_due(batches + 1)))

    def _global_step(self, trainer: pl.Trainer) -> int:
        counter = self._step_counter
        return counter.completed if counter is not None else trainer.global_step  # type: ignore[no-any-return]

    def _learning_rate(self) -> float:
        """The first parameter group's learning rate now (NaN when it is not a plain float)."""
        lr = self._lr_group.get("lr") if self._lr_group is not None else None
        return lr if type(lr) is float else math.nan

    def _prepare_plain_batch(self, trainer: pl.Trainer) -> bool:
        """When the next batch is plain (not timed, not sampled, no check due), set it up now and return True: its
        start hook would do only this, and Lightning's dispatch of the hook costs more (~2 us) than the work. The
        stall watchdog keeps the hook: it tells a stall inside a batch from one loading data by the hook's mark.
        Decided after the report, which can change the interval and the stride; the global step and the batch
        count are the next batch's already."""
        budget = self._budget
        if self._recorder is None or budget is None or self._watchdog is not None or self._leftover_due or self._broken:
            return False  # (a leftover check needs the batch's index within its epoch: the start hook has it)
        try:
            step = self._global_step(trainer)
            if self._timed_or_sampled(self._batches, step):
                return False
            self._check_leftover = False
            self._set_up_batch(step, False, False, False)
            # Work left (the first batches, a clearing check): the start hook runs and sets the batch up again.
            return not (self._backward_work or self._step_work)
        except Exception as error:
            self._internal_error("on_train_batch_end", error)
            return False

    def _hide_start(self, hidden: bool) -> None:
        if hidden != self._start_hidden:
            offer(self, self._start_hooks, not hidden)
            self._start_hidden = hidden

    # -- pauses that are not data loading ---------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hide_start(False)  # an epoch's first batch follows a change of the gradient accumulation
        self._interrupt("on_train_epoch_start")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._interrupt("on_validation_start")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._interrupt("on_save_checkpoint")

    def _interrupt(self, hook: str) -> None:
        """The time until the next batch is not data loading."""
        if self._recorder is not None and not self._broken:
            try:
                self._recorder.timer.interrupt()
            except Exception as error:
                self._internal_error(hook, error)

    # -- validation ---------------------------------------------------------------------------------------
    def _judging_fit(self, trainer: pl.Trainer) -> bool:
        """Validation inside a fit LossGuard watches (not trainer.validate() after it, not the sanity check)."""
        return (
            self._fitting
            and not self._finished
            and not trainer.sanity_checking
            and trainer.state.fn == TrainerFn.FITTING
        )

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._broken:
            return
        try:
            if self._watchdog is not None:
                self._beat(trainer)  # validation makes progress too
            if self.monitors and self._judging_fit(trainer):
                self._feed_validation_monitors(outputs, batch, dataloader_idx)
        except Exception as error:
            self._internal_error("on_validation_batch_end", error)

    @_own_time
    def _feed_validation_monitors(self, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        """Every validation batch (a confusion matrix needs them all), counted as LossGuard's own time: the budget
        reads it with the validation ends', as a cost per training batch."""
        for monitor in self.monitors:
            monitor.on_validation_batch_end(outputs, batch, dataloader_idx)

    # The budget counts a validation as a cost per batch (a longer report interval holds more validations, so it is
    # not report work a longer interval would spread): in short epochs, validations outnumber reports.
    @_own_time
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The validation metric is compared with the training loss up to now. Within one process the pending
        training batches are read for it (one device read) and judged at the next report, as the budget planned;
        under several ranks a report comes first (its collective keeps every rank's losses, and ranks alike)."""
        if self._recorder is None or self._broken or not self._judging_fit(trainer):
            return
        recent: Sequence[float] | np.ndarray = ()
        if self._budget is not None and self._budget.adapt:
            try:
                recent = self._recorder.pending_losses()
            except Exception as error:
                self._internal_error("on_validation_end", error)
                return
        else:
            self._report(trainer, pl_module)
        new: list[Diagnosis] = []
        try:
            logged = trainer.callback_metrics  # a property that rebuilds the dict on each read
            metrics = {k: float(v) for k, v in self._diagnostician.watched_metrics(logged).items()}
            if metrics:
                new = self._diagnostician.judge_validation(trainer.global_step, trainer.current_epoch, metrics, recent)
            stoppers = {k: float(logged[k]) for k in early_stopping_metrics(trainer) if k in logged}
            self._diagnostician.record_stopper_metrics(stoppers)
            for monitor in self.monitors:
                found = monitor.judge_validation(trainer.global_step, trainer.current_epoch)
                new += self._diagnostician.accept(found)
                self._monitor_log(trainer, monitor)
            if self._loggers is not None and metrics:
                self._loggers.validation(metrics, trainer.global_step)
            self._tell(trainer, new)
        except Exception as error:
            self._internal_error("on_validation_end", error)
        self._decide(trainer, new)

    # -- report steps --------------------------------------------------------------------------------------
    def _report(self, trainer: pl.Trainer, module: pl.LightningModule) -> list[Diagnosis]:
        """Read the interval back (one device sync, one collective under DDP), judge it, tell, decide."""
        assert self._recorder is not None
        new: list[Diagnosis] = []
        try:
            batches, self._since_report = self._batches - self._since_report, self._batches
            self._leftover_due = module.automatic_optimization  # manual optimization zeroes gradients when it likes
            self._lr_group = first_group(trainer)
            if self._step_counter is not None and self._step_counter.completed != trainer.global_step:
                self._step_counter = None  # the loops were replaced: the property from now on
            window = self._recorder.drain(gather_for(trainer.strategy, trainer.world_size))
            self._gradient_rows += len(window.optimizer_steps)
            window.scaler_scale = float(self._scaler.get_scale()) if self._scaler is not None else None
            window.host_rss_mb = host_rss_mb()
            window.allocator_free_mb = allocator_free_mb()
            window.device_allocated_mb = device_allocated_mb(self._device)
            if self._unstepped:
                window.unstepped = self._unstepped.read(trainer.optimizers)
            if not self._automatic:  # its steps a batch are known better at each report
                self._replan(trainer, batches_done_in_epoch(trainer))
            planned = self._budget.planned_batches if self._budget is not None else 0
            window.batches_left = max(0, planned - self._batches) if planned else None
            cost = self._review_cost(batches, window)
            if self._follow_pruning:
                self._mark_pruned(module)
            if not window.empty:
                new = self._diagnostician.judge(window, self._layout, *learning_rates(trainer))
                self._log_signals(window, cost)
            elif cost and self._loggers is not None:
                self._loggers.scalars(cost)
            for monitor in self.monitors:
                new += self._diagnostician.accept(monitor.judge_training(trainer.global_step))
                self._monitor_log(trainer, monitor)
            if self._order is None:
                self._watch(trainer, module)  # parameters added, unfrozen or frozen since the last report
            if reason := self.coverage.unmeasured_gradients(
                self._gradient_rows, len(self._watched.params), self._batches, self._report_batches
            ):
                self._gap("gradients", reason)
            self._tell(trainer, new)
        except Exception as error:
            self._internal_error("report", error)
        stalls, self._stalls = self._stalls, []
        self._decide(trainer, new + stalls)
        return new

    def _mark_pruned(self, module: pl.LightningModule) -> None:
        """Pruned weights get no gradient by design: dead_gradients does not judge them, and the report says so."""
        masked = pruned_parameters(module)
        flags = tuple(id(p) in masked for p in self._watched.params)
        if flags != self._layout.pruned:
            self._layout = dataclasses.replace(self._layout, pruned=flags)
            if note := pruned_note([n for n, pruned in zip(self._watched.names, flags) if pruned]):
                self._note(note)

    def _report_due(self, batches: int) -> bool:
        """Whether a report comes after ``batches`` training batches (the same batches on every rank)."""
        return (batches - self._report_anchor) % self._report_batches == 0

    def _tripwire(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The budget stretched the interval between reports: at each default interval, one host read says
        whether a loss went non-finite since the last report, and if so the report comes now (a NaN's latency
        stays one default interval; judging, the expensive part, still waits otherwise)."""
        try:
            due = self._recorder is not None and self._recorder.losses.any_nonfinite()
        except Exception as error:
            self._internal_error("tripwire", error)
            return
        if due:
            self._report(trainer, pl_module)

    def _review_cost(self, batches: int, window: Window) -> Series:
        """Keep LossGuard's own time under its budget: adapt the gradient stride and the report interval. Returns
        the cost's scalars, logged with the interval's signals (one TensorBoard event per report). The report
        under way counts in the next interval, as every report did in this one."""
        if self._budget is None:
            return {}
        step = window.phase_ms.get("step")
        cost = self._meter.take(batches, median(step) if step is not None else math.nan, len(window.optimizer_steps))
        self._budget.review(cost)
        self._take_budget_interval(self._budget)
        if not math.isfinite(self._budget.share):
            return {}
        return {
            "lossguard/cost/share": ([window.last_step], [self._budget.share]),
            "lossguard/cost/gradient_stride": ([window.last_step], [float(self._budget.stride)]),
        }

    def _take_budget_interval(self, budget: CostBudget) -> None:
        """The budget's report interval, and a NaN check at each default interval while it is stretched."""
        if budget.report_batches != self._report_batches:
            # Counted from here: on the old grid the next report could come a few batches from now.
            self._report_batches, self._report_anchor = budget.report_batches, self._batches
        self._tripwire_every = budget.base_report_batches if budget.stretched else 0

    def _log_signals(self, window: Window, extra: Series) -> None:
        if self._loggers is not None:
            band = self._diagnostician.band()
            self._loggers.signals(window, self._layout, band, final=self._finished, extra=extra)

    def _monitor_log(self, trainer: pl.Trainer, monitor: Monitor) -> None:
        if trainer.is_global_zero and self._loggers is not None and self._loggers.tensorboards:
            monitor.log(self._loggers.tensorboards, trainer.global_step)

    def _tell(self, trainer: pl.Trainer, new: list[Diagnosis]) -> None:
        if not new:
            return
        if trainer.is_global_zero:
            self._console.new_diagnoses(new)
            if self._loggers is not None:
                self._text(trainer, new)
        self._write_json(trainer, "running")

    def _text(self, trainer: pl.Trainer, new: list[Diagnosis], failed: bool = False) -> None:
        """The TensorBoard text report: every diagnosis so far, the notes and the gaps (rank 0, loggers only)."""
        if self._loggers is not None:
            self._loggers.diagnoses(
                new, self._diagnostician.diagnoses, self._notes, trainer.global_step, self.coverage.gaps, failed
            )

    def _decide(self, trainer: pl.Trainer, new: list[Diagnosis]) -> None:
        """Stop every rank at the same step when fail_on is reached; the decision is reduced across ranks."""
        if self.fail_on is None:
            return
        alarming = [d for d in new if d.severity.at_least(self.fail_on)]
        if not any_rank(trainer.strategy, trainer.world_size, bool(alarming)):
            return
        trainer.should_stop = True
        reasons = alarming or [d for d in self._diagnostician.diagnoses if d.severity.at_least(self.fail_on)]
        self._finish(trainer, "alarm")
        raise LossGuardAlarm(reasons, self._report_path)

    # -- end of fit -----------------------------------------------------------------------------------------
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._recorder is not None and not self._finished and not self._broken:
            mark = own_mark()
            self._report(trainer, pl_module)
            if self._budget is not None:
                self._budget.last_report(own_since(mark))
            self._judge_stopped_early(trainer)
        self._finish(trainer, "finished")

    def _judge_stopped_early(self, trainer: pl.Trainer) -> None:
        """A fit that early stopping ended is judged once more: on whether it learned anything at all. On every rank
        (fail_on's decision is a collective)."""
        new: list[Diagnosis] = []
        try:
            if (stopped := stopped_early(trainer)) and not self._finished:
                share = self._layout.trainable_share
                new = self._diagnostician.judge_stopped_early(trainer.global_step, stopped, share)
                self._tell(trainer, new)
        except Exception as error:
            self._internal_error("end of fit", error)
        self._decide(trainer, new)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._finished or not self._fitting:
            return
        try:
            if not isinstance(exception, LossGuardAlarm):
                finite = None
                if self._recorder is not None and not self._broken:
                    finite = self._recorder.record_held_loss(self._batches, self._learning_rate())
                    if finite is not None:
                        self._losses_seen += 1
                self._failure = failure_note(trainer.global_step, self._batches, exception, finite)
            if self._recorder is not None and not self._broken:
                # No collective here: other ranks may not be in this hook.
                new = self._diagnostician.judge(self._recorder.drain(), self._layout)
                if trainer.is_global_zero:
                    self._console.new_diagnoses(new)
                    if new:
                        self._text(trainer, new)
        except Exception as error:
            self._internal_error("on_exception", error)
        self._finish(trainer, "alarm" if isinstance(exception, LossGuardAlarm) else "failed")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._remove_hooks()

    def _finish(self, trainer: pl.Trainer, status: str) -> None:
        if self._finished:
            return
        self._finished = True
        self._fitting = False
        if self.fits:
            self.fits[-1] = {"status": status, "global_step": trainer.global_step}
        self._stop_watchdog(trainer)
        self._remove_hooks()
        cost: dict[str, float] = {}
        if not self._broken:
            self._notes += [n for n in self._unjudged_notes() + self._diagnostician.hindsight() if n not in self._notes]
            if self._budget is not None:
                self._notes += [n for n in [over_budget_note(self._budget)] if n]
                cost = self._budget.state()
        for monitor in self.monitors:
            self._notes += [n for n in monitor.notes() if n not in self._notes]
        if self._failure and self._failure not in self._notes:
            self._notes.insert(0, self._failure)
        self._write_json(trainer, status)
        if trainer.is_global_zero:
            try:
                cost_shown, printed, _ = cost_and_notes(cost, self._notes)  # the over-budget note: one line
                self._text(trainer, [], failed=status == "failed")
                if self._loggers is not None:
                    self._loggers.flush()
                self._console.summary(
                    self._diagnostician.diagnoses,
                    printed,
                    self._report_path,
                    self.coverage.gaps,
                    cost_shown,
                    failed=status == "failed",
                )
            except Exception as error:
                self._internal_error("summary", error)

    def _unjudged_notes(self) -> list[str]:
        notes = self._diagnostician.unjudged(
            self._layout,
            timed_forward=self._forward_seen,
            timed_backward=self._backward_seen,
            unhooked_because=self._unhooked_forward_reason(),
            gradients_watched=not self.coverage.missing("gradients"),
            budget=(self._budget.budget, self._budget.stride) if self._budget is not None else None,
        )
        logs = self._diagnostician.detectors.get(NonfiniteLoss.code)  # it counts what the skipped batches logged
        told = worst(d.severity for d in self._diagnostician.diagnoses if d.code == NonfiniteLoss.code)
        return returned_loss_notes(
            notes,
            self._batches,
            self._losses_seen,
            self._automatic,
            logs if isinstance(logs, NonfiniteLoss) else None,
            told,
        )

    def _unhooked_forward_reason(self) -> str:
        """Why the forward was not hooked ("": it was)."""
        if not self.time_forward:
            return "LossGuard(time_forward=False) does not time the forward pass"
        if self._compiled_steps:
            return (
                "the training step is compiled, by trainer.fit(torch.compile(model)), and a hook in it would break "
                "its graph and make it compile again"
            )
        return ""

    def _remove_hooks(self) -> None:
        offer(self, self._backward_hooks + self._step_hooks + self._start_hooks, True)
        self._offered = None
        self._start_hidden = False
        if self._forward is not None:
            self._forward_seen = self._forward.seen
            self._forward.remove()
            self._forward = None
        if self._logging is not None:
            self._logging.remove()
            self._logging = None
        if self._clip_watch is not None:
            self._clip_watch.remove()
            self._clip_watch = None
        if self._order is not None:
            self._order.stop()
            self._order = None
        if self._recorder is not None:
            deactivate(self._recorder.timer)
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        for monitor in self.monitors:
            monitor.teardown()

    def _report_file(self, trainer: pl.Trainer) -> str | None:
        """The report file this process writes: rank 0's, when there is a log directory and no fast_dev_run."""
        if not trainer.is_global_zero or getattr(trainer, "fast_dev_run", False):
            return None
        return self._report_path or None

    def _write_json(
        self, trainer: pl.Trainer, status: str, extra: list[Diagnosis] | None = None, notes: list[str] | None = None
    ) -> None:
        """Rank 0 only; ``extra`` diagnoses and ``notes`` are written without being kept (a stall in progress)."""
        path = self._report_file(trainer)
        if path is None:
            return
        # The report keeps the worst outcome of its fits: a clean later fit never hides one that blew up.
        ended = [f["status"] for f in self.fits[:-1]]
        shown = max([status, *ended], key=lambda s: _PROGRESS.get(s, 0)) if status != "running" else status
        try:
            write_report(
                path,
                self._diagnostician.diagnoses + (extra or []),
                shown,
                trainer.global_step,
                self._notes + (notes or []),
                self.fail_on.value if self.fail_on else None,
                self.coverage.gaps,
                self._budget.state() if self._budget is not None else None,
            )
        except OSError as error:
            self._internal_error("writing the report", error)

    # -- stalls (stall_timeout) --------------------------------------------------------------------------------
    def _on_stall(self, trainer: pl.Trainer, stall: Stall) -> None:
        """Watchdog thread: no collective, no tensor. Every rank prints its stacks; rank 0 reports the stall."""
        if self.verbose:
            sys.stderr.write(
                f"LossGuard rank {trainer.global_rank}: no training step completed for {stall.stalled_s:.1f} s "
                f"({stall.phase}); the Python stacks of this process:\n{stall.stacks_text()}\n"
            )
            sys.stderr.flush()
        shown = self._diagnostician.shown(self._stall_diagnosis(trainer, stall))
        if shown is not None and trainer.is_global_zero:
            self._console.new_diagnoses([shown])
            self._write_json(trainer, "running", [shown], [stall.note(trainer.global_rank)])

    def _beat(self, trainer: pl.Trainer) -> None:
        """A training batch completed: the watchdog's heartbeat; a stall it ends is reported with its duration."""
        assert self._watchdog is not None
        ended = self._watchdog.beat()
        if ended is not None:
            self._stall_ended(trainer, *ended)

    def _stall_ended(self, trainer: pl.Trainer, stall: Stall, total_s: float | None) -> None:
        note = stall.note(trainer.global_rank)
        if note not in self._notes:
            self._notes.append(note)
        new = self._diagnostician.accept([self._stall_diagnosis(trainer, stall, total_s)])
        self._stalls += new
        self._tell(trainer, new)

    def _stall_diagnosis(self, trainer: pl.Trainer, stall: Stall, total_s: float | None = None) -> Diagnosis:
        tail = self._recorder.last_ranks if self._recorder is not None else None
        main = stall.main
        return StalledTraining().stalled(
            self.stall_timeout or math.nan,
            stall.stalled_s if total_s is None else total_s,
            stall.step,
            stall.phase,
            main.innermost if main is not None else "(unknown)",
            len(stall.stacks),
            rank=trainer.global_rank,
            last=last_report(tail.step, tail.loss, tail.phase_rows) if tail is not None else None,
            resumed=total_s is not None,
            detected_s=stall.stalled_s,
        )

    def _stop_watchdog(self, trainer: pl.Trainer) -> None:
        """End of fit: stop the thread; a stall that never ended goes into the final report as it was seen."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            stall = watchdog.stop()
            if stall is not None:
                self._stall_ended(trainer, stall, None)

    # -- robustness -------------------------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)
            self._console.note(text)

    def _gap(self, signal: str, reason: str) -> None:
        gap = self.coverage.add(signal, reason)
        if gap is not None:
            self._console.note(f"not watched: {signal}: {reason}")

    def _internal_error(self, where: str, error: BaseException) -> None:
        """A bug or surprise inside LossGuard: a coverage gap, said once; it stops measuring and never breaks
        the user's training."""
        if isinstance(error, LossGuardAlarm) or os.environ.get("LOSSGUARD_STRICT") == "1":
            raise error  # strict mode (the test suite): an internal error must fail loudly
        if not self._broken:
            self._broken = True
            self._gap(
                "monitoring",
                f"internal error in {where} at batch {self._batches} ({type(error).__name__}: {error}); "
                "LossGuard stopped watching this run from there. Training continued; please report this.",
            )

    # -- checkpointing ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "diagnostician": self._diagnostician.state_dict(),
            "notes": list(self._notes),
            "coverage": self.coverage.state_dict(),
            "monitors": [m.state_dict() for m in self.monitors],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._diagnostician.load_state_dict(state_dict.get("diagnostician", {}))
        self._notes = list(state_dict.get("notes", []))
        self.coverage.load_state_dict(state_dict.get("coverage", []))
        for monitor, state in zip(self.monitors, state_dict.get("monitors", [])):
            monitor.load_state_dict(state)
