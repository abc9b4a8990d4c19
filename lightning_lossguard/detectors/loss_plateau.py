"""``loss_plateau``: the training loss never really fell: after a fair share of the run it is still within
``min_improvement`` of where it started.

A converged run fell first and flattened later: its best level is far below its start, so it stays
quiet. A plateau is judged only after ``min_steps`` and ``judge_fraction`` of the planned steps, so a
slow learning-rate warm-up is not mistaken for one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import BlockMedians, median
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class LossPlateauThresholds(Thresholds):
    block: int = threshold(10, "Batches per block median.")
    min_steps: int = threshold(100, "Batches needed before judging.")
    judge_fraction: float = threshold(0.1, "... and this fraction of the planned training steps.")
    edge_blocks: int = threshold(3, "Blocks for the start level and for the current level.")
    min_improvement: float = threshold(0.05, "Improvement below this fraction of the start level is a plateau.")
    converged_loss: float = threshold(1e-6, "Losses starting below this are already converged: not judged.")


class LossPlateau(Detector[LossPlateauThresholds]):
    """Start level vs best and current levels of the block-median training loss."""

    code = "loss_plateau"
    Thresholds = LossPlateauThresholds

    def __init__(self, thresholds: LossPlateauThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.blocks = BlockMedians(int(self.thresholds.block))
        self.best = math.inf
        self.scanned = 0

    def unjudged(self) -> str | None:
        need = int(max(self.thresholds.min_steps, 2 * self.thresholds.edge_blocks * self.thresholds.block))
        return None if self.blocks.count >= need else f"needs {need} batches, saw {self.blocks.count}"

    def update(
        self, steps: Sequence[int], losses: Sequence[float] | np.ndarray, total_steps: int | None = None
    ) -> list[Diagnosis]:
        t = self.thresholds
        self.blocks.extend(steps, losses)
        values = self.blocks.values
        k = int(t.edge_blocks)
        needed = max(t.min_steps, t.judge_fraction * (total_steps or 0))
        if self.blocks.count < needed or len(values) < 2 * k or not steps:
            return []
        start, current = median(values[:k]), median(values[-k:])
        # Best level: the lowest median of k consecutive blocks, so one lucky block does not count as progress.
        self.scanned = min(self.scanned, len(values))  # blocks may have been merged
        for i in range(max(0, self.scanned - k + 1), len(values) - k + 1):
            self.best = min(self.best, median(values[i : i + k]))
        self.scanned = len(values)
        best = self.best
        if abs(start) < t.converged_loss:
            return []
        improvement = (start - best) / abs(start)
        if improvement >= t.min_improvement or current > start * (1 + t.min_improvement):
            return []  # it learned at some point, or it is rising (loss_divergence's concern)
        message = (
            f"The training loss has not improved: it started at {start:.4g} and is {current:.4g} after "
            f"{self.blocks.count} batches (best {best:.4g}, {improvement:.1%} better than the start)."
        )
        evidence = {
            "start_loss": start,
            "best_loss": best,
            "current_loss": current,
            "improvement": improvement,
            "batches": self.blocks.count,
        }
        return [self.diagnosis(int(steps[-1]), message, evidence)]
