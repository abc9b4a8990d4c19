"""``loss_scale_shift`` (info): the loss level or the gradient-norm level jumped by more than an order of
magnitude between two steady phases of a run, or between two fits of one model (seed 000: switching the
loss function changes the effective step size, so the learning rate likely needs re-tuning).

Gradual change (a loss that decays fast early) is not a shift: both phases must be steady.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import BlockMedians, log10_array, median
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class LossScaleShiftThresholds(Thresholds):
    min_shift: float = threshold(1.0, "Shift between phases, in decades (1.0: 10x).")
    block: int = threshold(10, "Steps per block median.")
    phase_blocks: int = threshold(3, "Blocks per phase.")
    steadiness: float = threshold(0.3, "Max spread (decades) of the blocks within a phase.")


class LossScaleShift(Detector[LossScaleShiftThresholds]):
    """Two steady phases of block medians (log10), far apart: in the loss or in the gradient norm."""

    code = "loss_scale_shift"
    Thresholds = LossScaleShiftThresholds

    def __init__(self, thresholds: LossScaleShiftThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.loss = BlockMedians(int(self.thresholds.block))
        self.grad = BlockMedians(int(self.thresholds.block))
        self.previous_fit: dict[str, float] = {}

    def remember_previous_fit(self, loss_level: float, grad_level: float) -> None:
        """Levels (log10) at the end of an earlier fit of the same model, to compare the next fit with."""
        self.previous_fit = {"loss": loss_level, "gradient norm": grad_level}

    def levels(self) -> tuple[float, float]:
        """Current (log10) loss and gradient-norm levels: the last phase's medians."""
        k = int(self.thresholds.phase_blocks)
        return median(self.loss.values[-k:]), median(self.grad.values[-k:])

    def update(
        self,
        steps: Sequence[int],
        losses: Sequence[float] | np.ndarray,
        optimizer_steps: Sequence[int] = (),
        grad_norms: Sequence[float] | np.ndarray = (),
    ) -> list[Diagnosis]:
        self.loss.extend(steps, log10_array(np.abs(np.asarray(losses, dtype=np.float64))))
        self.grad.extend(optimizer_steps, log10_array(grad_norms))
        found: list[Diagnosis] = []
        for what, series in (("loss", self.loss), ("gradient norm", self.grad)):
            shift = self._shift(what, series)
            if shift is not None:
                found.append(shift)
        return found

    def _shift(self, what: str, series: BlockMedians) -> Diagnosis | None:
        t = self.thresholds
        k = int(t.phase_blocks)
        values = series.values
        previous = self.previous_fit.get(what)
        if len(values) >= k and previous is not None and math.isfinite(previous) and len(values) <= 2 * k:
            now = values[:k]
            if max(now) - min(now) <= t.steadiness and abs(median(now) - previous) >= t.min_shift:
                return self._report(what, previous, median(now), series.steps[k - 1], "since the previous fit")
        if len(values) < 2 * k:
            return None
        before, after = values[-2 * k : -k], values[-k:]
        if max(before) - min(before) > t.steadiness or max(after) - min(after) > t.steadiness:
            return None
        old, new = median(before), median(after)
        if abs(new - old) < t.min_shift:
            return None
        return self._report(what, old, new, series.steps[-k], f"around step {series.steps[-k - 1]}")

    def _report(self, what: str, old: float, new: float, step: int, when: str) -> Diagnosis:
        factor = 10 ** (new - old)
        direction = "up" if factor > 1 else "down"
        message = (
            f"The {what} level moved {direction} {max(factor, 1 / factor):.3g}x {when} "
            f"({10**old:.3g} -> {10**new:.3g}) and stayed there: the effective step size changed, so the "
            "learning rate likely needs re-tuning."
        )
        evidence = {"before": 10**old, "after": 10**new, "factor": factor}
        return self.diagnosis(step, message, evidence, subject=what)
