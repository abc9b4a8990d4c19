"""Signals and diagnoses to the trainer's loggers: scalars to every logger, text and charts to TensorBoard.

Scalars live under ``lossguard/`` (``lossguard/grad_norm``, ``lossguard/train_loss``,
``lossguard/loss_step_ms``, ``lossguard/time/<phase>_ms``, ...); the diagnoses are markdown under the
text tag ``lossguard/diagnoses`` (and ``lossguard/diagnoses/<code>``). Rank 0 only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.markdown import diagnosis_section, full_report

LAYOUT = {
    "LossGuard": {
        "gradient norm (pre-clip) and its normal band": [
            "Margin",
            ["lossguard/grad_norm", "lossguard/grad_norm_band_low", "lossguard/grad_norm_band_high"],
        ],
        "gradient norm by depth": [
            "Multiline",
            [
                "lossguard/grad/first_layer_norm",
                "lossguard/grad/last_layer_norm",
                "lossguard/grad/max_layer_norm",
            ],
        ],
        "train and validation loss": ["Multiline", ["lossguard/train_loss", "lossguard/val/.*"]],
        "step time by phase (ms)": ["Multiline", ["lossguard/loss_step_ms", "lossguard/time/.*"]],
        "alarms so far (warnings + errors)": ["Multiline", ["lossguard/alarms"]],
        "memory (MiB)": ["Multiline", ["lossguard/memory/.*"]],
    }
}
"""The custom-scalars dashboard (TensorBoard's "Custom Scalars" tab)."""


class LoggerReporter:
    """Writes to the Lightning loggers of a run (call on the global-zero rank only)."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)
        self._layout_written = False

    @property
    def tensorboards(self) -> list[Any]:
        return [lg.experiment for lg in self.loggers if isinstance(lg, TensorBoardLogger)]

    def start(self) -> None:
        if self._layout_written:
            return
        for writer in self.tensorboards:
            writer.add_custom_scalars(LAYOUT)
        self._layout_written = True

    def scalars(self, series: Mapping[str, tuple[Sequence[int], Sequence[float] | np.ndarray]]) -> None:
        """Log named series; values at the same step are averaged (micro-batches of one optimizer step)."""
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (steps, values) in series.items():
            sums: dict[int, list[float]] = defaultdict(list)
            for step, value in zip(steps, values):
                if value is not None and math.isfinite(float(value)):
                    sums[int(step)].append(float(value))
            for step, vals in sums.items():
                by_step[step][name] = sum(vals) / len(vals)
        for step in sorted(by_step):
            for logger in self.loggers:
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
        count = sum(d.severity.at_least(Severity.WARNING) for d in everything)
        for logger in self.loggers:
            logger.log_metrics({"lossguard/alarms": float(count)}, step=step)

    def flush(self) -> None:
        for writer in self.tensorboards:
            writer.flush()
