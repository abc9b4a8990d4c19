"""``expensive_loss``: computing the loss takes a large share of each training step (seed 004).

The loss time is exact inside ``lightning_lossguard.timed("loss")`` sections; otherwise it is measured from
the end of the model's last forward call to the start of backward, which also contains whatever else
training_step does there (``self.log``, metric updates). When no forward call was seen (``self.forward(x)``
called directly, parameters used functionally) the split is not measured and nothing is claimed. The
message says which one it is, and a cheap loss is never reported (``min_loss_ms``).

A warning needs the loss to cost more than the forward pass it serves (``max_loss_to_forward``): a
vectorised loss over a large output (a language model's softmax) is a large share of a small model's step
but cheaper than the head that produced its input; a per-sample Python loop is not. Where the training thread's
CPU time is measured (CPU runs), the share must hold in CPU time too: a busy machine preempts a long loss more often
than the rest of a short step, which raises the loss's share of the wall time only.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import median
from lightning_lossguard.diagnosis import Diagnosis, Severity


@dataclasses.dataclass(frozen=True)
class ExpensiveLossThresholds(Thresholds):
    warn_share: float = threshold(0.35, "Loss time / whole step time at or above this is a warning.")
    info_share: float = threshold(0.2, "... at or above this, an info.")
    min_loss_ms: float = threshold(2.0, "Losses faster than this (median ms) are never reported.")
    warmup_steps: int = threshold(20, "Batches ignored at the start.")
    min_steps: int = threshold(30, "Measured batches needed before judging.", low=1)
    max_loss_to_forward: float = threshold(
        1.0, "A warning also needs the loss to take more than this many times the forward's time.", open_low=True
    )


class ExpensiveLoss(Detector[ExpensiveLossThresholds]):
    """Median share of the loss in the whole step, over the batches seen so far (after warm-up)."""

    code = "expensive_loss"
    Thresholds = ExpensiveLossThresholds

    def __init__(self, thresholds: ExpensiveLossThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.loss_ms: deque[float] = deque(maxlen=300)
        self.step_ms: deque[float] = deque(maxlen=300)
        self.forward_ms: deque[float] = deque(maxlen=300)
        self.cpu_share: deque[float] = deque(maxlen=300)  # loss / step in the training thread's CPU time
        self.skipped = 0

    def unjudged(self) -> str | None:
        t = self.thresholds
        need, seen = int(t.warmup_steps + t.min_steps), self.skipped + len(self.loss_ms)
        return (
            None if len(self.loss_ms) >= t.min_steps else f"needs {need} batches with a measured loss time, saw {seen}"
        )

    def update(
        self,
        steps: Sequence[int],
        loss_ms: Sequence[float] | np.ndarray,
        step_ms: Sequence[float] | np.ndarray,
        exact: bool = True,
        forward_ms: Sequence[float] | np.ndarray | None = None,
        cpu_loss_ms: Sequence[float] | np.ndarray | None = None,
        cpu_step_ms: Sequence[float] | np.ndarray | None = None,
    ) -> list[Diagnosis]:
        """Add per-batch loss, whole-step and forward times (ms); ``exact``: the loss was timed with
        ``timed("loss")``; ``cpu_loss_ms``/``cpu_step_ms``: the loss and the step in CPU time of the training thread
        (NaN where unmeasured)."""
        t = self.thresholds
        loss_values = np.asarray(loss_ms, dtype=np.float64)
        step_values = np.asarray(step_ms, dtype=np.float64)
        skip = max(0, min(len(loss_values), int(t.warmup_steps) - self.skipped))
        self.skipped += skip
        forward_values = (
            np.full(len(loss_values), np.nan) if forward_ms is None else np.asarray(forward_ms, dtype=np.float64)
        )
        nan = np.full(len(loss_values), np.nan)
        cpu_loss = nan if cpu_loss_ms is None else np.asarray(cpu_loss_ms, dtype=np.float64)
        cpu_step = nan if cpu_step_ms is None else np.asarray(cpu_step_ms, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            cpu_shares = np.where(cpu_step > 0, cpu_loss / cpu_step, np.nan)[skip:]
        loss_values, step_values, forward_values = loss_values[skip:], step_values[skip:], forward_values[skip:]
        keep = np.isfinite(loss_values) & np.isfinite(step_values) & (step_values > 0)
        self.loss_ms.extend(loss_values[keep].tolist())
        self.step_ms.extend(step_values[keep].tolist())
        self.forward_ms.extend(forward_values[keep].tolist())
        self.cpu_share.extend(cpu_shares[keep & np.isfinite(cpu_shares)].tolist())
        if len(self.loss_ms) < t.min_steps or not steps:
            return []
        loss, step = median(self.loss_ms), median(self.step_ms)
        share = median(np.fromiter(self.loss_ms, np.float64) / np.fromiter(self.step_ms, np.float64))
        if loss < t.min_loss_ms or share < t.info_share:
            return []
        what = (
            "Computing the loss takes"
            if exact
            else "training_step spends, between the model's forward and backward (the loss plus any self.log or "
            "metric calls),"
        )
        message = (
            f"{what} {loss:.3g} ms of each {step:.3g} ms step ({share:.0%}), median over {len(self.loss_ms)} batches."
        )
        remedies = list(code_info(self.code).remedies)
        if not exact:
            remedies.append(
                "Time the loss exactly with `with lightning_lossguard.timed('loss'):`; if self.log or metrics are the "
                "cost, log less often (on_step=False) or update metrics every N steps."
            )
        forward = median(self.forward_ms)
        evidence = {"loss_ms": loss, "step_ms": step, "share": share, "forward_ms": forward, "exact": float(exact)}
        # Judged on CPU time too only when most batches have it (a resumed run's first window may not).
        cpu_share = median(self.cpu_share) if 2 * len(self.cpu_share) >= len(self.loss_ms) else math.nan
        if math.isfinite(cpu_share):
            evidence["cpu_share"] = cpu_share
        found = self.diagnosis(int(steps[-1]), message, evidence, remedies=remedies)
        costlier = not math.isfinite(forward) or loss > t.max_loss_to_forward * forward
        busy_machine = math.isfinite(cpu_share) and cpu_share < t.warn_share
        if share < t.warn_share or not costlier or busy_machine:
            found = dataclasses.replace(found, severity=Severity.INFO)
        return [found]
