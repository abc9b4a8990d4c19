"""Signals and diagnoses to the trainer's loggers: scalars to every logger, text and charts to TensorBoard.

Scalars live under ``lossguard/``, one point per series per report interval (the interval's median, at its
last step): the same cadence as Lightning's own step logging, and 50x fewer TensorBoard writes than a point
per step, which would cost more than the whole measurement. Each series is logged once:

- ``lossguard/train_loss``; ``lossguard/val/<metric>``, the validation metric LossGuard judged (TensorBoard
  only: other loggers already hold the run's own copy; the LossGuard tab needs to know which tag it is);
- ``lossguard/grad_norm`` (pre-clip), ``lossguard/grad_norm_max`` (the interval's largest, so a spike stays
  visible), ``lossguard/grad_norm_clipped`` (post-clip, with norm clipping), ``lossguard/grad_norm_band_low``
  and ``_high`` (the normal band, once known), ``lossguard/grad/{first,last,max}_layer_norm``;
- ``lossguard/loss_step_ms`` (training_step: forward + loss), ``lossguard/time/<phase>_ms``;
- ``lossguard/loss_terms/<name>``, ``lossguard/update_ratio``, ``lossguard/memory/<kind>``.

No log10 copies (the LossGuard tab draws on a log axis, and every TensorBoard chart has a log-scale toggle)
and no alarm counter (TensorBoard smooths every scalar, and a smoothed count reads as fractional alarms; the
LossGuard tab marks each diagnosis at its step instead). TensorBoard also gets the diagnoses as markdown
under the text tag ``lossguard/diagnoses`` (and ``lossguard/diagnoses/<code>``), a per-layer gradient-norm
histogram, and a small Custom Scalars dashboard (:func:`dashboard`) with the charts that need several series
in one picture. Rank 0 only.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary

from lightning_lossguard.detectors.stats import model_update_ratio
from lightning_lossguard.diagnosis import Diagnosis
from lightning_lossguard.diagnostician import RunLayout
from lightning_lossguard.lightning_classes import lightning_classes
from lightning_lossguard.report.json_report import Gap
from lightning_lossguard.report.markdown import diagnosis_section, full_report
from lightning_lossguard.signals.window import Window

HISTOGRAM_EVERY = 5
"""Reports between two per-layer gradient-norm histograms in TensorBoard."""

Series = dict[str, tuple[Sequence[int], Sequence[float] | np.ndarray]]

NORM = "lossguard/grad_norm"
MAX_NORM = "lossguard/grad_norm_max"
"""The largest gradient norm of each report interval (``lossguard/grad_norm`` is its median)."""

VAL = "lossguard/val/"
"""The validation metric LossGuard judged; TensorBoard only (see the module docstring)."""


def dashboard(loss_terms: bool = False) -> dict[str, dict[str, list[Any]]]:
    """The Custom Scalars layout: only what neither the LossGuard tab nor the Scalars tab shows.

    The LossGuard tab draws the loss and the gradient norm in its band, and the Scalars tab has one chart per
    series (the step times among them); what is left is the charts that compare several series at once.
    """
    charts: dict[str, list[Any]] = {
        "gradient norm: whole model (pre-clip, interval max, post-clip) and by depth": [
            "Multiline",
            ["^lossguard/grad_norm(_max|_clipped)?$", "^lossguard/grad/.*_norm$"],
        ],
    }
    if loss_terms:
        charts["loss terms"] = ["Multiline", ["^lossguard/loss_terms/"]]
    return {"LossGuard": charts}


def tensorboard_loggers(loggers: Sequence[Logger]) -> list[TensorBoardLogger]:
    """The TensorBoard loggers among ``loggers``, of either Lightning package, in their order."""
    return [logger for logger in loggers if isinstance(logger, lightning_classes(TensorBoardLogger))]


class LoggerReporter:
    """Writes to the Lightning loggers of a run (call on the global-zero rank only)."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)
        self._layout: dict[str, dict[str, list[Any]]] | None = None  # the Custom Scalars layout written
        self._reports = 0

    @property
    def tensorboards(self) -> list[Any]:
        return [logger.experiment for logger in tensorboard_loggers(self.loggers)]

    def without_tensorboard(self) -> list[str]:
        """The loggers' class names when none of them is a TensorBoard logger: they get the scalars, but nothing
        takes the diagnoses' text."""
        if self.tensorboards:
            return []
        return [type(logger).__name__ for logger in self.loggers]

    def start(self) -> None:
        """Write the Custom Scalars layout (:meth:`signals` adds the loss-terms chart when terms show up)."""
        if self._layout is None:
            self._write_layout(dashboard())

    def _write_layout(self, layout: dict[str, dict[str, list[Any]]]) -> None:
        for writer in self.tensorboards:
            writer.add_custom_scalars(layout)
        self._layout = layout

    def signals(
        self,
        window: Window,
        layout: RunLayout,
        band: tuple[float, float] | None,
        final: bool = False,
        extra: Series | None = None,
    ) -> None:
        """Log one report interval's signals (``band``: the gradient norm's normal band, when known) and ``extra``
        series of the same report, in one write."""
        opt = window.optimizer_steps
        series: Series = {"lossguard/train_loss": (window.batch_steps, window.loss), **(extra or {})}
        if opt:
            norms = window.grad_norms
            series[NORM] = (opt, norms)
            if layout.clip_val:
                # Norm clipping rescales the gradients to at most clip_val: the post-clip norm, exactly.
                series["lossguard/grad_norm_clipped"] = (opt, np.minimum(norms, layout.clip_val))
            layers = window.layer_grad_norms(layout.layer_of, len(layout.layers))
            dense = [i for i, ok in enumerate(layout.comparable) if ok]
            if dense:
                series["lossguard/grad/first_layer_norm"] = (opt, layers[:, dense[0]])
                series["lossguard/grad/last_layer_norm"] = (opt, layers[:, dense[-1]])
            if layers.size:
                with np.errstate(all="ignore"):
                    series["lossguard/grad/max_layer_norm"] = (
                        opt,
                        np.nanmax(np.where(np.isnan(layers), -np.inf, layers), axis=1),
                    )
                self._reports += 1
                if self._reports % HISTOGRAM_EVERY == 1 or final:
                    # The per-layer distribution moves slowly; a snapshot every few reports is enough.
                    self.histogram("lossguard/grad/layer_norms_log10", np.log10(layers[-1][layers[-1] > 0]), opt[-1])
            if band is not None:
                series["lossguard/grad_norm_band_low"] = (opt, np.full(len(opt), band[0]))
                series["lossguard/grad_norm_band_high"] = (opt, np.full(len(opt), band[1]))
        if window.timing_steps:
            series["lossguard/loss_step_ms"] = (window.timing_steps, window.phase_ms["training_step"])
            for phase, values in window.phase_ms.items():
                if phase != "training_step":
                    series[f"lossguard/time/{phase}_ms"] = (window.timing_steps, values)
            for name, values in window.section_ms.items():
                series[f"lossguard/time/{name}_ms"] = (window.timing_steps, values)
        for name, values in window.loss_terms.items():
            series[f"lossguard/loss_terms/{name}"] = (window.batch_steps, values)
        if window.loss_terms and self._layout != (with_terms := dashboard(loss_terms=True)):
            self._write_layout(with_terms)
        step = window.last_step
        if window.update_ratio is not None and window.sample_step is not None:
            ratio = model_update_ratio(window.update_ratio, np.asarray(layout.param_sizes, dtype=np.float64))
            if math.isfinite(ratio):  # the statistic tiny_updates judges: every weight counts once
                series["lossguard/update_ratio"] = ([window.sample_step], [ratio])
        if window.host_rss_mb is not None:
            series["lossguard/memory/host_rss_mb"] = ([step], [window.host_rss_mb])
        if window.allocator_free_mb is not None and math.isfinite(window.allocator_free_mb):
            series["lossguard/memory/allocator_free_mb"] = ([step], [window.allocator_free_mb])
        if window.device_allocated_mb is not None:
            series["lossguard/memory/cuda_allocated_mb"] = ([step], [window.device_allocated_mb])
        self.scalars(series)

    def scalars(self, series: Mapping[str, tuple[Sequence[int], Sequence[float] | np.ndarray]]) -> None:
        """Log each named series as one point: the median of its finite values, at its last step."""
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (steps, values) in series.items():
            array = np.asarray(values, dtype=np.float64)
            finite = np.isfinite(array)
            if not len(steps) or not finite.any():
                continue
            step = int(max(steps))
            by_step[step][name] = statistics.median(array[finite].tolist())  # faster than np on short series
            if name == NORM:
                by_step[step][MAX_NORM] = float(array[finite].max())
        for step in sorted(by_step):
            metrics = by_step[step]
            for logger in self.loggers:
                if isinstance(logger, lightning_classes(TensorBoardLogger)):
                    _write_scalars(logger.experiment, metrics, step)
                else:
                    own = {k: v for k, v in metrics.items() if not k.startswith(VAL)}
                    if own:
                        logger.log_metrics(own, step=step)

    def validation(self, metrics: Mapping[str, float], step: int) -> None:
        """One validation's watched metrics under ``lossguard/val/``, as one TensorBoard event (the other loggers
        have them from the module's own logging): the short path of :meth:`scalars`, taken once per validation."""
        points = {f"{VAL}{name}": value for name, value in metrics.items() if math.isfinite(value)}
        if points:
            for writer in self.tensorboards:
                _write_scalars(writer, points, step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        values = values[np.isfinite(values)]
        if values.size:
            for writer in self.tensorboards:
                writer.add_histogram(tag, values, step)

    def diagnoses(
        self,
        new: Sequence[Diagnosis],
        everything: Sequence[Diagnosis],
        notes: Sequence[str],
        step: int,
        gaps: Sequence[Gap] = (),
        failed: bool = False,
    ) -> None:
        """Rewrite the text report (cause first, with what was not watched; ``failed``: the fit stopped on an
        exception) and add a per-code entry for each new diagnosis."""
        if not self.tensorboards:
            return
        text = full_report(everything, notes, gaps, failed)
        for writer in self.tensorboards:
            writer.add_text("lossguard/diagnoses", text, step)
            for d in new:
                writer.add_text(f"lossguard/diagnoses/{d.code}", diagnosis_section(d), d.step)
        self.flush()

    def flush(self) -> None:
        for writer in self.tensorboards:
            writer.flush()


def _write_scalars(writer: Any, metrics: Mapping[str, float], step: int) -> None:
    """All scalars of one step as a single TensorBoard event.

    ``add_scalar`` writes one event per value into the writer's 10-slot queue; past ten, each call waits
    for the writer thread to take the GIL, which made the report cost milliseconds. One event with many
    values is what TensorBoard itself stores for a multi-value summary.
    """
    file_writer = getattr(writer, "_get_file_writer", None)
    if file_writer is None:  # another SummaryWriter flavour: the public, slower path
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
        return
    values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in metrics.items()]
    file_writer().add_summary(Summary(value=values), step)
