"""``LossGuard``: the Lightning callback. Thin glue: hooks -> signals -> diagnostician -> reporters.

Per training batch it only takes marks and launches device copies (no host read). Every
``report_every`` optimizer steps it reads the interval back once, judges it, and reports.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.nn.modules.loss import _Loss
from torch.utils.hooks import RemovableHandle

from lightning_lossguard.alarm import LossGuardAlarm
from lightning_lossguard.catalog import code_info
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.diagnostician import Diagnostician, RunLayout
from lightning_lossguard.monitor import Monitor
from lightning_lossguard.report.console import ConsoleReporter
from lightning_lossguard.report.json_report import REPORT_NAME, write_report
from lightning_lossguard.report.loggers import LoggerReporter
from lightning_lossguard.signals.clock import clock_for
from lightning_lossguard.signals.gradients import build_layout
from lightning_lossguard.signals.memory import device_allocated_mb, host_rss_mb
from lightning_lossguard.signals.recorder import SignalRecorder
from lightning_lossguard.signals.step_timer import activate, deactivate
from lightning_lossguard.signals.window import Window

FailOn = Literal["warning", "error"]
SeverityName = Literal["info", "warning", "error"]

_SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


class LossGuard(Callback):
    """Watches gradients, the loss curve and the loss-step time; reports diagnoses with remedies.

    Args:
        fail_on: ``"error"`` or ``"warning"``: a diagnosis at or above this level stops every rank and the fit
            raises :class:`LossGuardAlarm` after the reports are written. ``None`` (default): report only.
        report_every: optimizer steps between reports (the one host read of the buffered signals).
            Default: the trainer's ``log_every_n_steps``.
        suppress: diagnosis codes never to report.
        severity: per-code severity overrides, e.g. ``{"loss_plateau": "error"}``.
        thresholds: per-code threshold overrides, e.g. ``{"exploding_gradients": {"spike_factor": 20}}``.
        val_metric: the validation metric watched by ``val_loss_rising``.
        verbose: print diagnoses on the console as they happen and a summary at the end.
        time_forward: hook the model's forward to separate the loss time from the forward time.
        max_update_elements: weights copied on report steps to measure update/weight ratios (0: off).
        name: distinguishes several LossGuard instances (checkpoint state key and report file name).
        monitors: opt-in :class:`~lightning_lossguard.monitor.Monitor` extensions (e.g. output checks).
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
        monitors: list[Monitor] | None = None,
    ) -> None:
        if fail_on is not None and fail_on not in ("warning", "error"):
            raise ValueError(f"fail_on must be 'warning', 'error' or None; got {fail_on!r}.")
        if report_every is not None and (not isinstance(report_every, int) or report_every < 1):
            raise ValueError(f"report_every must be a positive integer or None; got {report_every!r}.")
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"name must be letters, digits, '-' or '_'; got {name!r}.")
        if max_update_elements < 0:
            raise ValueError(f"max_update_elements must be >= 0; got {max_update_elements!r}.")
        self.fail_on = Severity(fail_on) if fail_on else None
        self.report_every = report_every
        self.suppress = list(suppress or [])
        self.severity_overrides = dict(severity or {})
        self.thresholds = {k: dict(v) for k, v in (thresholds or {}).items()}
        self.val_metric = val_metric
        self.verbose = verbose
        self.time_forward = time_forward
        self.max_update_elements = max_update_elements
        self.name = name
        self.monitors = list(monitors or [])
        for monitor in self.monitors:
            if not isinstance(monitor, Monitor):
                raise ValueError(f"monitors must be lightning_lossguard.Monitor instances; got {monitor!r}.")
            for code in monitor.codes:
                code_info(code)
        self._diagnostician = self._new_diagnostician()  # validates codes, severities and thresholds now
        self.notes: list[str] = []
        self.report_path: str | None = None
        self._reset_run()

    # -- public ---------------------------------------------------------------------------------------
    @property
    def diagnoses(self) -> list[Diagnosis]:
        """Every diagnosis of the current (or last) fit, oldest first."""
        return list(self._diagnostician.diagnoses)

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
        self._layout = RunLayout()
        self._forward_hooks: dict[int, tuple[RemovableHandle, RemovableHandle]] = {}
        self._outermost: set[int] = set()
        self._order_hooks: list[RemovableHandle] = []
        self._execution_order: list[str] = []
        self._batches_since_report = 0
        self._batch_step = 0
        self._report_batches = 1
        self._sampling = False
        self._finished = False
        self._broken = False
        self._console = ConsoleReporter(enabled=self.verbose)
        self._loggers: LoggerReporter | None = None
        self._scaler: Any = None
        self._device = torch.device("cpu")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        previous = self._diagnostician.scale_shift
        levels = previous.levels() if previous is not None else (math.nan, math.nan)
        self._diagnostician = self._new_diagnostician()  # a new fit; a resume reloads state right after this
        current = self._diagnostician.scale_shift
        if current is not None and all(math.isfinite(v) for v in levels):
            current.remember_previous_fit(*levels)
        self._reset_run()
        self.notes = []
        # A collective under DDP: every rank, exactly once, outside any rank-zero branch.
        log_dir = trainer.log_dir
        file_name = REPORT_NAME if self.name == "lossguard" else f"lossguard-{self.name}.json"
        self.report_path = os.path.join(log_dir, file_name) if log_dir else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            self._start(trainer, pl_module)
        except Exception as error:  # never break training because of monitoring
            self._internal_error("start", error)

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._device = pl_module.device
        strategy = type(trainer.strategy).__name__
        # Sharded gradients need a cross-rank sum of squares this release cannot verify: no number beats a wrong one.
        sharded = strategy in _SHARDED_STRATEGIES
        params = [] if sharded else [p for _, p in pl_module.named_parameters() if p.requires_grad]
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        self._recorder = SignalRecorder(params, clock_for(self._device), loss_scale=accumulate)
        activate(self._recorder.timer)
        self._report_batches = (
            self.report_every or max(1, int(getattr(trainer, "log_every_n_steps", 50)))
        ) * accumulate
        self._layout = self._build_layout(trainer, pl_module, ())
        plugin = trainer.precision_plugin
        self._scaler = plugin.scaler if isinstance(plugin, MixedPrecision) else None
        if self.time_forward:
            self._hook_forward(pl_module)
        for monitor in self.monitors:
            monitor.setup(pl_module, self._device)
        if trainer.is_global_zero:
            self._loggers = LoggerReporter(trainer.loggers)
            self._loggers.start()
            # The alarm chart starts at the right count (not 0 after a resume with diagnoses restored).
            self._loggers.alarms(self._diagnostician.diagnoses, trainer.global_step)
        self._start_notes(trainer, pl_module, params, sharded)

    def _build_layout(self, trainer: pl.Trainer, module: nn.Module, order: Sequence[str]) -> RunLayout:
        assert self._recorder is not None
        if not self._recorder.gradients.parameters:
            return RunLayout(total_steps=_planned_steps(trainer))  # gradients not watched
        layout = build_layout(module, order)
        named = {n: p for n, p in module.named_parameters() if p.requires_grad}
        clip = trainer.gradient_clip_val
        # None means Lightning's default, which is clipping by norm.
        norm_clipping = str(trainer.gradient_clip_algorithm or "norm").lower().endswith("norm")
        return RunLayout(
            param_names=layout.names,
            param_sizes=tuple(named[n].numel() for n in layout.names),
            param_units=tuple(
                named[n].shape[0] if i in set(layout.unit_params) else 0 for i, n in enumerate(layout.names)
            ),
            layer_of=layout.layer_of,
            layers=layout.layers,
            comparable=layout.comparable,
            clip_val=float(clip) if clip and norm_clipping else None,
            scaler_active=self._scaler is not None,
            total_steps=_planned_steps(trainer),
        )

    def _start_notes(self, trainer: pl.Trainer, module: pl.LightningModule, params: list[Any], sharded: bool) -> None:
        notes = []
        if getattr(trainer, "fast_dev_run", False):
            notes.append("fast_dev_run: Lightning disables logging, so diagnoses are printed but no report is written.")
        elif not self.report_path:
            notes.append("No log directory: the JSON report is not written.")
        if not trainer.loggers:
            notes.append("No logger: signals and diagnoses do not go to TensorBoard (add a TensorBoardLogger).")
        if sharded:
            notes.append(
                f"{type(trainer.strategy).__name__} shards gradients across ranks: gradient diagnoses "
                "(exploding/vanishing/dead/non-finite gradients, tiny_updates) are not supported with sharded "
                "strategies yet and are off; loss-curve, validation and step-time diagnoses work."
            )
        elif not params:
            notes.append("The model has no trainable parameters: gradient diagnoses are unavailable.")
        if not module.automatic_optimization:
            notes.append(
                "Manual optimization: gradients are measured at each optimizer.step(); loss diagnoses need "
                "training_step to return the loss."
            )
        for note in notes:
            self._note(note)

    def _hook_forward(self, module: pl.LightningModule) -> None:
        assert self._recorder is not None
        timer = self._recorder.timer
        targets: list[nn.Module] = [module]
        targets += [
            m for m in module.children() if not isinstance(m, _Loss) and any(p.requires_grad for p in m.parameters())
        ]
        outermost = self._outermost

        def enter(target: nn.Module) -> Any:
            def hook(*_: Any) -> None:
                if timer.forward_enter():
                    outermost.add(id(target))

            return hook

        for target in targets:
            pre = target.register_forward_pre_hook(enter(target))
            post = target.register_forward_hook(lambda *_: timer.forward_exit())
            self._forward_hooks[id(target)] = (pre, post)

    def _prune_forward_hooks(self) -> None:
        # After the first batch: a hooked call that is never outermost only costs time (about 8 us a call).
        for key, handles in list(self._forward_hooks.items()):
            if key not in self._outermost:
                for handle in handles:
                    handle.remove()
                del self._forward_hooks[key]

    def _capture_execution_order(self, module: nn.Module) -> None:
        seen = self._execution_order

        def record(name: str) -> Any:
            def hook(*_: Any) -> None:
                if name not in seen:
                    seen.append(name)

            return hook

        for name, sub in module.named_modules():
            if name and any(True for _ in sub.parameters(recurse=False)):
                self._order_hooks.append(sub.register_forward_pre_hook(record(name)))

    def _stop_capture(self, trainer: pl.Trainer, module: nn.Module) -> None:
        for handle in self._order_hooks:
            handle.remove()
        self._order_hooks = []
        self._prune_forward_hooks()
        self._layout = self._build_layout(trainer, module, self._execution_order)

    # -- per-step path: marks and device copies only ----------------------------------------------------
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._recorder is None or self._broken:
            return
        try:
            if not self._execution_order and not self._order_hooks:
                self._capture_execution_order(pl_module)
            self._batch_step = trainer.global_step  # after an optimizer step global_step moves on
            self._recorder.begin_batch()
            self._recorder.timer.batch_start(self._batch_step)
        except Exception as error:
            self._internal_error("on_train_batch_start", error)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if self._recorder is None or self._broken:
            return
        try:
            if self._order_hooks:
                self._stop_capture(trainer, pl_module)
            self._recorder.timer.backward_start()
        except Exception as error:
            self._internal_error("on_before_backward", error)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._recorder is not None and not self._broken:
            self._recorder.timer.backward_end()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._recorder is None or self._broken:
            return
        try:
            # Gradients here are unscaled (AMP) and not yet clipped: the pre-clip norm.
            self._recorder.record_gradients(self._batch_step, optimizer)
            if self._batches_since_report + 1 >= self._report_batches:
                self._sampling = True
                units = [i for i, u in enumerate(self._layout.param_units) if u]
                self._recorder.sample_before_step(self._batch_step, optimizer, units, self.max_update_elements)
            self._recorder.timer.optimizer_start()
        except Exception as error:
            self._internal_error("on_before_optimizer_step", error)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._recorder is None or self._broken:
            return
        try:
            self._recorder.timer.batch_end()
            loss, terms = _loss_of(outputs)
            if loss is not None:
                self._recorder.record_loss(self._batch_step, loss, terms)
            if self._sampling:
                self._recorder.sample_after_step()
                self._sampling = False
            for monitor in self.monitors:
                monitor.on_train_batch_end(outputs, batch, self._batch_step)
            self._batches_since_report += 1
        except Exception as error:
            self._internal_error("on_train_batch_end", error)
            return
        if self._batches_since_report >= self._report_batches:
            self._report(trainer)

    # -- pauses that are not data loading ---------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._recorder is not None:
            self._recorder.timer.interrupt()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._recorder is not None:
            self._recorder.timer.interrupt()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._recorder is not None:
            self._recorder.timer.interrupt()

    # -- validation ---------------------------------------------------------------------------------------
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or self._broken or not self.monitors:
            return
        try:
            for monitor in self.monitors:
                monitor.on_validation_batch_end(outputs, batch, dataloader_idx)
        except Exception as error:
            self._internal_error("on_validation_batch_end", error)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._recorder is None or self._broken:
            return
        self._report(trainer)  # judge pending training batches first: the val diagnosis compares with them
        new: list[Diagnosis] = []
        try:
            metrics = {
                k: float(v)
                for k, v in trainer.callback_metrics.items()
                if k == self.val_metric or k.startswith(f"{self.val_metric}/dataloader_idx_")
            }
            if metrics:
                new = self._diagnostician.judge_validation(trainer.global_step, trainer.current_epoch, metrics)
            for monitor in self.monitors:
                found = monitor.judge_validation(trainer.global_step, trainer.current_epoch)
                new += self._diagnostician.accept(found)
                self._monitor_log(trainer, monitor)
            if self._loggers is not None and metrics:
                self._loggers.scalars({f"lossguard/val/{k}": ([trainer.global_step], [v]) for k, v in metrics.items()})
            self._tell(trainer, new)
        except Exception as error:
            self._internal_error("on_validation_end", error)
        self._decide(trainer, new)

    # -- report steps --------------------------------------------------------------------------------------
    def _report(self, trainer: pl.Trainer) -> list[Diagnosis]:
        """Read the interval back (one device sync, one collective under DDP), judge it, tell, decide."""
        assert self._recorder is not None
        self._batches_since_report = 0
        new: list[Diagnosis] = []
        try:
            world = trainer.world_size
            reduce_sum = (lambda t: trainer.strategy.reduce(t, reduce_op="sum")) if world > 1 else None
            window = self._recorder.drain(reduce_sum, world)
            window.scaler_scale = float(self._scaler.get_scale()) if self._scaler is not None else None
            window.host_rss_mb = host_rss_mb()
            window.device_allocated_mb = device_allocated_mb(self._device)
            if not window.empty:
                new = self._diagnostician.judge(window, self._layout, _learning_rate(trainer))
                self._log_signals(window)
            for monitor in self.monitors:
                new += self._diagnostician.accept(monitor.judge_training(trainer.global_step))
                self._monitor_log(trainer, monitor)
            self._tell(trainer, new)
        except Exception as error:
            self._internal_error("report", error)
        self._decide(trainer, new)
        return new

    def _log_signals(self, window: Window) -> None:
        if self._loggers is not None:
            self._loggers.signals(window, self._layout, self._diagnostician.band(), final=self._finished)

    def _monitor_log(self, trainer: pl.Trainer, monitor: Monitor) -> None:
        if trainer.is_global_zero and self._loggers is not None and self._loggers.tensorboards:
            monitor.log(self._loggers.tensorboards, trainer.global_step)

    def _tell(self, trainer: pl.Trainer, new: list[Diagnosis]) -> None:
        if not new:
            return
        if trainer.is_global_zero:
            self._console.new_diagnoses(new)
            if self._loggers is not None:
                self._loggers.diagnoses(new, self._diagnostician.diagnoses, self.notes, trainer.global_step)
        self._write_json(trainer, "running")

    def _decide(self, trainer: pl.Trainer, new: list[Diagnosis]) -> None:
        """Stop every rank at the same step when fail_on is reached; the decision is reduced across ranks."""
        if self.fail_on is None:
            return
        alarming = [d for d in new if d.severity.at_least(self.fail_on)]
        if not trainer.strategy.reduce_boolean_decision(bool(alarming), all=False):
            return
        trainer.should_stop = True
        reasons = alarming or [d for d in self._diagnostician.diagnoses if d.severity.at_least(self.fail_on)]
        self._finish(trainer, "alarm")
        raise LossGuardAlarm(reasons, self.report_path)

    # -- end of fit -----------------------------------------------------------------------------------------
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._recorder is not None and not self._finished and not self._broken:
            self._report(trainer)
        self._finish(trainer, "finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._finished:
            return
        try:
            if self._recorder is not None and not self._broken:
                # No collective here: other ranks may not be in this hook.
                new = self._diagnostician.judge(self._recorder.drain(), self._layout)
                if trainer.is_global_zero:
                    self._console.new_diagnoses(new)
                    if self._loggers is not None and new:
                        self._loggers.diagnoses(new, self._diagnostician.diagnoses, self.notes, trainer.global_step)
        except Exception as error:
            self._internal_error("on_exception", error)
        self._finish(trainer, "failed")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()

    def _finish(self, trainer: pl.Trainer, status: str) -> None:
        if self._finished:
            return
        self._finished = True
        self._remove_hooks()
        self.notes += self._diagnostician.unjudged(self._layout)
        for monitor in self.monitors:
            self.notes += [n for n in monitor.notes() if n not in self.notes]
        self._write_json(trainer, status)
        if trainer.is_global_zero:
            try:
                if self._loggers is not None:
                    self._loggers.diagnoses([], self._diagnostician.diagnoses, self.notes, trainer.global_step)
                    self._loggers.flush()
                self._console.summary(self._diagnostician.diagnoses, self.notes, self.report_path)
            except Exception as error:
                self._internal_error("summary", error)

    def _remove_hooks(self) -> None:
        for handle in [h for pair in self._forward_hooks.values() for h in pair] + self._order_hooks:
            handle.remove()
        self._forward_hooks, self._order_hooks = {}, []
        if self._recorder is not None:
            deactivate(self._recorder.timer)
        for monitor in self.monitors:
            monitor.teardown()

    def _write_json(self, trainer: pl.Trainer, status: str) -> None:
        if not trainer.is_global_zero or not self.report_path or getattr(trainer, "fast_dev_run", False):
            return
        try:
            write_report(
                self.report_path,
                self._diagnostician.diagnoses,
                status,
                trainer.global_step,
                self.notes,
                self.fail_on.value if self.fail_on else None,
            )
        except OSError as error:
            self._internal_error("writing the report", error)

    # -- robustness -------------------------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            self._console.note(text)

    def _internal_error(self, where: str, error: BaseException) -> None:
        """A bug or surprise inside LossGuard: say so once, stop measuring, never break the user's training."""
        if isinstance(error, LossGuardAlarm) or os.environ.get("LOSSGUARD_STRICT") == "1":
            raise error  # strict mode (the test suite): an internal error must fail loudly
        if not self._broken:
            self._broken = True
            self._note(
                f"LossGuard hit an internal error in {where} and stopped watching this run "
                f"({type(error).__name__}: {error}). Training continues; please report this."
            )

    # -- checkpointing ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "diagnostician": self._diagnostician.state_dict(),
            "notes": list(self.notes),
            "monitors": [m.state_dict() for m in self.monitors],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._diagnostician.load_state_dict(state_dict.get("diagnostician", {}))
        self.notes = list(state_dict.get("notes", []))
        for monitor, state in zip(self.monitors, state_dict.get("monitors", [])):
            monitor.load_state_dict(state)


def _loss_of(outputs: Any) -> tuple[torch.Tensor | None, Mapping[str, Any] | None]:
    """The loss tensor and the optional ``loss_terms`` dict from what training_step returned."""
    if isinstance(outputs, torch.Tensor):
        return outputs, None
    if isinstance(outputs, Mapping):
        loss = outputs.get("loss")
        terms = outputs.get("loss_terms")
        return (loss if isinstance(loss, torch.Tensor) else None), (terms if isinstance(terms, Mapping) else None)
    return None, None


def _planned_steps(trainer: pl.Trainer) -> int | None:
    total = trainer.estimated_stepping_batches
    return int(total) if isinstance(total, (int, float)) and math.isfinite(total) else None


def _learning_rate(trainer: pl.Trainer) -> float:
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (IndexError, KeyError, TypeError, ValueError):
        return math.nan
