"""``loss_term_imbalance``: in a multi-term loss one term is orders of magnitude larger than another.

Terms come from ``training_step`` returning ``{"loss": total, "loss_terms": {"name": value, ...}}``, as
they enter the total (weighted). Compared by the median of their absolute values over a window.

A small term that is growing fast (a KL term whose weight is warmed up from 0, a regulariser ramped in)
is not imbalanced yet: it is judged once its level stops climbing (its recent half within ``warmup_growth``
of its earlier half).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import median
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class LossTermImbalanceThresholds(Thresholds):
    max_ratio: float = threshold(100.0, "Largest / smallest term (median absolute value) above this is imbalanced.")
    window: int = threshold(50, "Batches in the rolling median.")
    min_steps: int = threshold(20, "Batches needed before judging.", low=2)
    warmup_growth: float = threshold(
        2.0, "A smallest term whose recent half is this many times its earlier half is still warming up.", low=1
    )


class LossTermImbalance(Detector[LossTermImbalanceThresholds]):
    """Ratio of the largest to the smallest loss term over a rolling window."""

    code = "loss_term_imbalance"
    Thresholds = LossTermImbalanceThresholds

    def __init__(self, thresholds: LossTermImbalanceThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.values: dict[str, deque[float]] = {}

    def update(self, steps: Sequence[int], terms: Mapping[str, Sequence[float] | np.ndarray]) -> list[Diagnosis]:
        t = self.thresholds
        for name, values in terms.items():
            history = self.values.setdefault(name, deque(maxlen=int(t.window)))
            history.extend(abs(float(v)) for v in values if np.isfinite(v))
        levels = {n: median(h) for n, h in self.values.items() if len(h) >= t.min_steps}
        levels = {n: v for n, v in levels.items() if v > 0}
        if len(levels) < 2 or not steps:
            return []
        big = max(levels, key=levels.__getitem__)
        small = min(levels, key=levels.__getitem__)
        ratio = levels[big] / levels[small]
        if ratio < t.max_ratio:
            return []
        smallest = list(self.values[small])
        half = len(smallest) // 2
        earlier, recent = median(smallest[:half]), median(smallest[half:])
        if earlier > 0 and recent >= t.warmup_growth * earlier:
            return []  # the small term is being ramped up (a warm-up): not judged while it climbs
        message = (
            f"Loss term '{big}' ({levels[big]:.3g}) is {ratio:.3g}x larger than '{small}' ({levels[small]:.3g}): "
            f"'{small}' likely barely steers the gradients (judged by the terms' sizes, not their gradients). If it "
            "is weighted down on purpose (an auxiliary loss such as a mixture of experts' load-balancing or router "
            "z-loss), this is expected: LossGuard(suppress=['loss_term_imbalance'])."
        )
        evidence = {
            "ratio": ratio,
            "largest_term": levels[big],
            "smallest_term": levels[small],
            "terms": len(levels),
        }
        return [self.diagnosis(int(steps[-1]), message, evidence, subject=big)]

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        values = state.get("values", {})
        assert isinstance(values, dict)
        self.values = {n: deque(v, maxlen=int(self.thresholds.window)) for n, v in values.items()}
