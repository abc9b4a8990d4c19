"""``nonfinite_loss``: the training loss is NaN or Inf."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class NonfiniteLossThresholds(Thresholds):
    min_batches: int = threshold(1, "Non-finite training losses needed before the diagnosis (1: the first).")


class NonfiniteLoss(Detector[NonfiniteLossThresholds]):
    """Fires on the first non-finite training loss: a NaN loss poisons the weights at the next step."""

    code = "nonfinite_loss"
    Thresholds = NonfiniteLossThresholds

    def __init__(self, thresholds: NonfiniteLossThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.first_step: int | None = None
        self.nan_batches = 0
        self.inf_batches = 0
        self.last_finite: float = math.nan
        self.last_finite_step: int = -1

    def update(self, steps: Sequence[int], losses: Sequence[float] | np.ndarray) -> list[Diagnosis]:
        values = np.asarray(losses, dtype=np.float64)
        nonfinite = ~np.isfinite(values)
        nan = np.isnan(values)
        self.nan_batches += int(nan.sum())
        self.inf_batches += int((nonfinite & ~nan).sum())
        if self.first_step is None and values.size:
            # The last finite loss before the first non-finite one (or the latest, while all are finite).
            first_bad = int(np.argmax(nonfinite)) if nonfinite.any() else values.size
            finite_before = np.flatnonzero(~nonfinite[:first_bad])
            if finite_before.size:
                i = int(finite_before[-1])
                self.last_finite, self.last_finite_step = float(values[i]), int(steps[i])
            if first_bad < values.size:
                self.first_step = int(steps[first_bad])
        bad = self.nan_batches + self.inf_batches
        if self.first_step is None or bad < self.thresholds.min_batches or not steps:
            return []
        kind = "NaN" if self.nan_batches else "infinite"
        before = (
            f"; the last finite loss was {self.last_finite:.4g} at step {self.last_finite_step}"
            if self.last_finite_step >= 0
            else "; no finite loss was seen before it"
        )
        message = (
            f"The training loss became {kind} at step {self.first_step} "
            f"({bad} non-finite batch{'es' if bad != 1 else ''} so far){before}."
        )
        evidence = {
            "first_step": self.first_step,
            "nan_batches": self.nan_batches,
            "inf_batches": self.inf_batches,
            "last_finite_loss": self.last_finite,
        }
        return [self.diagnosis(steps[-1], message, evidence)]
