"""``stalled_training``: no training step completed for ``stall_timeout`` seconds.

Not a window detector: the watchdog thread (:mod:`lightning_lossguard.signals.watchdog`) notices the stall while
the loop is stuck, when no report interval will ever close. This module turns what it saw (plain numbers and
words: how long, the step, the phase, the main thread's innermost frame, what each rank sent at the last report)
into the diagnosis: once while still stalled (written to the report by the watchdog thread), and again, final,
when a step completes and training goes on (how long it stalled).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds
from lightning_lossguard.detectors.stats import median
from lightning_lossguard.diagnosis import Diagnosis, format_number

MAX_RANKS_SHOWN = 8
"""Ranks listed one by one in the message; more are summarised."""


@dataclasses.dataclass(frozen=True)
class StalledTrainingThresholds(Thresholds):
    """No thresholds: the timeout is ``LossGuard(stall_timeout=...)``."""


@dataclasses.dataclass(frozen=True)
class LastReport:
    """What every rank sent at the last report (plain numbers).

    Attributes:
        step: the last step of that report.
        loss: per rank, its last loss (None when no loss was returned).
        step_ms: per rank, its median step time (the batch, data wait excluded).
        data_ms: per rank, its median data-loading wait.
    """

    step: int
    loss: Sequence[float] | None
    step_ms: Sequence[float]
    data_ms: Sequence[float]


class StalledTraining(Detector[StalledTrainingThresholds]):
    """Builds the ``stalled_training`` diagnosis from what the watchdog saw."""

    code = "stalled_training"
    Thresholds = StalledTrainingThresholds

    def stalled(
        self,
        timeout_s: float,
        stalled_s: float,
        step: int | None,
        phase: str,
        main_frame: str,
        threads: int,
        rank: int = 0,
        last: LastReport | None = None,
        resumed: bool = False,
        detected_s: float = math.nan,
    ) -> Diagnosis:
        """The diagnosis: while still stalled (``resumed`` False), or once a step completed (``stalled_s`` is then
        the whole stall, ``detected_s`` how long it had lasted when it was noticed)."""
        at = f"at step {step}" if step is not None else "before the first step"
        where = f"{at} in {phase}" if not phase.startswith(("between", "outside")) else f"{phase}"
        if resumed:
            head = (
                f"Training stalled for {stalled_s:.1f} s (stall_timeout {format_number(timeout_s)} s) {where}, then a "
                f"step completed and training went on; when it was noticed the main thread was in {main_frame}"
            )
        else:
            head = (
                f"No training step completed for {stalled_s:.1f} s (stall_timeout {format_number(timeout_s)} s): "
                f"stuck {where}, still stalled when this was written; the main thread is in {main_frame}"
            )
        message = head + _last_report(last) + f". The stacks of rank {rank}'s {threads} threads are in the notes"
        message += "; under DDP every rank prints its own." if last is not None else "."
        evidence: dict[str, float] = {
            "stalled_s": stalled_s,
            "timeout_s": timeout_s,
            "step": float(step) if step is not None else math.nan,
            "resumed": 1.0 if resumed else 0.0,
            "threads": threads,
            "rank": rank,
        }
        if resumed:
            evidence["detected_after_s"] = detected_s
        if last is not None:
            evidence["last_report_step"] = last.step
            evidence["ranks"] = len(last.step_ms)
        subject = f"step {step}" if step is not None else "start"
        return self.diagnosis(step if step is not None else 0, message, evidence, subject=subject)


def _last_report(last: LastReport | None) -> str:
    if last is None:
        return ""
    parts = []
    for rank in range(min(len(last.step_ms), MAX_RANKS_SHOWN)):
        loss = f"loss {format_number(last.loss[rank])}, " if last.loss is not None else ""
        data = last.data_ms[rank] if rank < len(last.data_ms) else math.nan
        parts.append(
            f"rank {rank} {loss}{format_number(last.step_ms[rank])} ms per step"
            + (f" + {format_number(data)} ms data" if math.isfinite(data) else "")
        )
    more = len(last.step_ms) - MAX_RANKS_SHOWN
    tail = f"; {more} more ranks" if more > 0 else ""
    return f"; at the last report (step {last.step}) " + "; ".join(parts) + tail


def last_report(step: int, loss: np.ndarray | None, phase_rows: Mapping[str, np.ndarray]) -> LastReport | None:
    """A :class:`LastReport` from a distributed report's per-rank numbers: ``phase_rows[phase][rank]`` holds that
    rank's times, of which each rank's median of the finite ones is told (None without per-rank step times)."""
    step_rows = phase_rows.get("step")
    if step_rows is None or not len(step_rows):
        return None
    step_ms = [median(row) for row in step_rows]
    data = phase_rows.get("data")
    data_ms = [median(row) for row in data] if data is not None else [math.nan] * len(step_ms)
    return LastReport(step, loss.tolist() if loss is not None else None, step_ms, data_ms)
