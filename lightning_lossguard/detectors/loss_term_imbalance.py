"""``loss_term_imbalance``: in a multi-term loss one term is orders of magnitude larger than another.

Terms come from ``training_step`` returning ``{"loss": total, "loss_terms": {"name": value, ...}}``, as
they enter the total (weighted). Compared by the median of their absolute values over a window.

A small term that is growing fast (a KL term whose weight is warmed up from 0, a regulariser ramped in)
is not imbalanced yet: it is judged once its level stops climbing (its recent half within ``warmup_growth``
of its earlier half).

Only a term that carries the task can be drowned: a term whose name marks it as an auxiliary loss
(:data:`AUXILIARY_WORDS`: a mixture of experts' load-balancing or router z-loss, an ``aux_loss``) is weighted down
on purpose, typically 1e-2 to 1e-3 of the task, so it being far smaller is an info, not a warning. Term values alone
cannot tell the two apart (measured: the zoo's MSE drowned by an L2 term weighted 10 and a Switch mixture of experts'
z-loss both sit flat, 300-400x below the largest term, from their first batch), so the name the user gave decides.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import median
from lightning_lossguard.diagnosis import Diagnosis, Severity

AUXILIARY_WORDS = ("aux", "balanc", "router", "z_loss", "zloss", "load")
"""A term whose name contains one of these (any case) is an auxiliary loss: ``aux_loss``, ``balance``,
``load_balancing``, ``router_z``, ``z_loss``. Such a term far below the task is reported as an info."""


def auxiliary(name: str) -> bool:
    """Whether a loss term's name marks it as an auxiliary loss, weighted down on purpose."""
    lowered = name.lower()
    return any(word in lowered for word in AUXILIARY_WORDS)


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
        primary = [n for n in levels if not auxiliary(n) and n != big]
        drowned = min(primary, key=levels.__getitem__) if primary else None
        if drowned is None or levels[big] / levels[drowned] < t.max_ratio:
            helpers = [n for n in levels if auxiliary(n) and n != big]
            drowned = min(helpers, key=levels.__getitem__) if helpers else None
        if drowned is None or levels[big] / levels[drowned] < t.max_ratio or self._warming_up(drowned):
            return []
        small = drowned
        ratio = levels[big] / levels[small]
        evidence = {
            "ratio": ratio,
            "largest_term": levels[big],
            "smallest_term": levels[small],
            "terms": len(levels),
            "auxiliary": float(auxiliary(small)),
        }
        if auxiliary(small):
            message = (
                f"Loss term '{big}' ({levels[big]:.3g}) is {ratio:.3g}x larger than '{small}' ({levels[small]:.3g}), "
                "whose name marks it as an auxiliary loss (a mixture of experts' load-balancing or router z-loss is "
                f"weighted down on purpose): expected. If '{small}' should steer training, raise its weight."
            )
            found = self.diagnosis(int(steps[-1]), message, evidence, subject=big)
            return [dataclasses.replace(found, severity=Severity.INFO)]
        message = (
            f"Loss term '{big}' ({levels[big]:.3g}) is {ratio:.3g}x larger than '{small}' ({levels[small]:.3g}): "
            f"'{small}' likely barely steers the gradients (judged by the terms' sizes, not their gradients). If it "
            "is weighted down on purpose, name it as an auxiliary loss (e.g. 'aux_...') or "
            "LossGuard(suppress=['loss_term_imbalance'])."
        )
        return [self.diagnosis(int(steps[-1]), message, evidence, subject=big)]

    def _warming_up(self, name: str) -> bool:
        """Whether the term's recent half is ``warmup_growth`` times its earlier half: being ramped up, not judged."""
        values = list(self.values[name])
        half = len(values) // 2
        earlier, recent = median(values[:half]), median(values[half:])
        return earlier > 0 and recent >= self.thresholds.warmup_growth * earlier

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        values = state.get("values", {})
        assert isinstance(values, dict)
        self.values = {n: deque(v, maxlen=int(self.thresholds.window)) for n, v in values.items()}
