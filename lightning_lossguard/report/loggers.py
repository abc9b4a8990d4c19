"""Signals and diagnoses to the trainer's loggers: scalars to every logger, text and charts to TensorBoard.

Scalars live under ``lossguard/`` (``lossguard/grad_norm``, ``lossguard/train_loss``,
``lossguard/loss_step_ms``, ``lossguard/time/<phase>_ms``, ``lossguard/alarms``, ...), one point per series
per report interval (the interval's median, at its last step; ``lossguard/grad_norm_max`` keeps the
interval's largest norm so a spike stays visible): the same cadence as Lightning's own step logging, and
50x fewer TensorBoard writes than a point per step, which would cost more than the whole measurement.
TensorBoard also
gets ``lossguard/log10/...`` copies of the norms and losses for the custom-scalars dashboard
(:data:`LAYOUT`), and the diagnoses as markdown under the text tag ``lossguard/diagnoses`` (and
``lossguard/diagnoses/<code>``). Rank 0 only.
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

from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.diagnostician import RunLayout
from lightning_lossguard.report.markdown import diagnosis_section, full_report
from lightning_lossguard.signals.step_timer import PHASES
from lightning_lossguard.signals.window import Window

HISTOGRAM_EVERY = 5
"""Reports between two per-layer gradient-norm histograms in TensorBoard."""

Series = dict[str, tuple[Sequence[int], Sequence[float] | np.ndarray]]

MAX_NORM = "lossguard/grad_norm_max"
"""The largest gradient norm of each report interval (``lossguard/grad_norm`` is its median)."""

_LOG10 = "lossguard/log10/"
"""TensorBoard-only copies, in decades, of the series that span orders of magnitude when a run goes wrong."""

_MAGNITUDES = ("lossguard/grad/", "lossguard/train_loss", "lossguard/val/", "lossguard/loss_terms/")
_BAND = ("lossguard/grad_norm", "lossguard/grad_norm_band_low", "lossguard/grad_norm_band_high")

_PHASE_TITLES = {
    "step": "whole step",
    "data": "data loading",
    "training_step": "training_step (forward + loss)",
    "forward": "forward",
    "loss": "loss",
    "backward": "backward",
    "optimizer": "optimizer step (with clipping)",
}


def _phase_tag(phase: str) -> str:
    return "lossguard/loss_step_ms" if phase == "training_step" else f"lossguard/time/{phase}_ms"


LAYOUT: dict[str, dict[str, list[Any]]] = {
    # At a glance: is the loss falling, when did alarms fire, is the loss step getting slower, is the gradient
    # norm inside its normal band. A blow-up spans many decades and flattens the healthy part of a linear
    # curve to a line at zero, so the norm and the losses are drawn in log10. TensorBoard draws a
    # category's Margin charts after its other charts: the band chart is written last to match.
    "LossGuard": {
        "train and validation loss (log10)": ["Multiline", [_LOG10 + "train_loss", _LOG10 + "val/.*"]],
        "alarms so far (warnings + errors)": ["Multiline", ["lossguard/alarms"]],
        "training_step time: forward + loss (ms)": ["Multiline", ["^lossguard/loss_step_ms$"]],
        "gradient norm (pre-clip, log10) inside its normal band": [
            "Margin",
            [_LOG10 + name.removeprefix("lossguard/") for name in _BAND],
        ],
    },
    # One chart per phase: the lines of one run share a colour, so several phases in one chart are unreadable.
    "LossGuard: step time by phase (ms)": {
        _PHASE_TITLES.get(p, p): ["Multiline", [f"^{_phase_tag(p)}$"]]
        for p in [*_PHASE_TITLES, *(p for p in PHASES if p not in _PHASE_TITLES)]
    },
    "LossGuard: more signals": {
        "gradient norm, whole model and by depth (log10)": ["Multiline", [_LOG10 + "grad/.*"]],
        "train and validation loss": ["Multiline", ["lossguard/train_loss", "lossguard/val/.*"]],
        "loss terms (log10)": ["Multiline", [_LOG10 + "loss_terms/.*"]],
        "weight update / weight (median over parameters)": ["Multiline", ["lossguard/update_ratio"]],
        "memory (MiB)": ["Multiline", ["lossguard/memory/.*"]],
    },
}
"""The custom-scalars dashboard (TensorBoard's "Custom Scalars" tab)."""


class LoggerReporter:
    """Writes to the Lightning loggers of a run (call on the global-zero rank only)."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)
        self._layout_written = False
        self._alarms = 0
        self._reports = 0

    @property
    def tensorboards(self) -> list[Any]:
        return [lg.experiment for lg in self.loggers if isinstance(lg, TensorBoardLogger)]

    def start(self) -> None:
        if self._layout_written:
            return
        for writer in self.tensorboards:
            writer.add_custom_scalars(LAYOUT)
        self._layout_written = True

    def signals(self, window: Window, layout: RunLayout, band: tuple[float, float] | None, final: bool = False) -> None:
        """Log one report interval's signals (``band``: the gradient norm's normal band, when known)."""
        opt = window.optimizer_steps
        series: Series = {"lossguard/train_loss": (window.batch_steps, window.loss)}
        if opt:
            norms = window.grad_norms
            series["lossguard/grad_norm"] = (opt, norms)
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
        step = window.last_step
        if window.update_ratio is not None and window.sample_step is not None:
            measured = window.update_ratio[window.update_ratio >= 0]
            if measured.size:
                series["lossguard/update_ratio"] = ([window.sample_step], [float(np.median(measured))])
        if window.host_rss_mb is not None:
            series["lossguard/memory/host_rss_mb"] = ([step], [window.host_rss_mb])
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
            if name == _BAND[0]:
                by_step[step][MAX_NORM] = float(array[finite].max())
        if by_step:
            # Repeat the alarm count at each report so its chart is a staircase from 0, not a few dots.
            by_step[max(by_step)].setdefault("lossguard/alarms", float(self._alarms))
        for step in sorted(by_step):
            decades = _log10_copies(by_step[step])
            for logger in self.loggers:
                if isinstance(logger, TensorBoardLogger):
                    _write_scalars(logger.experiment, {**by_step[step], **decades}, step)
                else:
                    logger.log_metrics(by_step[step], step=step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        values = values[np.isfinite(values)]
        if values.size:
            for writer in self.tensorboards:
                writer.add_histogram(tag, values, step)

    def diagnoses(
        self, new: Sequence[Diagnosis], everything: Sequence[Diagnosis], notes: Sequence[str], step: int
    ) -> None:
        """Rewrite the text report (newest first) and add a per-code entry for each new diagnosis."""
        if not self.tensorboards:
            return
        text = full_report(everything, notes)
        for writer in self.tensorboards:
            writer.add_text("lossguard/diagnoses", text, step)
            for d in new:
                writer.add_text(f"lossguard/diagnoses/{d.code}", diagnosis_section(d), d.step)
        self.alarms(everything, step)
        self.flush()

    def alarms(self, everything: Sequence[Diagnosis], step: int) -> None:
        """Log the number of warnings and errors so far; later reports repeat it (0 until the first call)."""
        self._alarms = sum(d.severity.at_least(Severity.WARNING) for d in everything)
        for logger in self.loggers:
            logger.log_metrics({"lossguard/alarms": float(self._alarms)}, step=step)

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


def _log10_copies(metrics: Mapping[str, float]) -> dict[str, float]:
    """``lossguard/log10/<name>`` for the magnitude-like metrics of one step (values <= 0 have no log10)."""
    out = {
        _LOG10 + name.removeprefix("lossguard/"): math.log10(value)
        for name, value in metrics.items()
        if name.startswith(_MAGNITUDES) and value > 0
    }
    norm = metrics.get(_BAND[0], 0.0)
    if norm > 0:
        out[_LOG10 + "grad/norm"] = math.log10(norm)
    largest = metrics.get(MAX_NORM, 0.0)
    if largest > 0:
        out[_LOG10 + "grad/norm_max"] = math.log10(largest)
    band = [metrics.get(name, 0.0) for name in _BAND]
    # The Margin chart refuses a value and a band whose steps differ: write the three together or none.
    if all(v > 0 for v in band):
        out.update({_LOG10 + name.removeprefix("lossguard/"): math.log10(v) for name, v in zip(_BAND, band)})
    return out
