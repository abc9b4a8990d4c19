"""``loss_divergence``: the training loss climbs far above where it started and keeps climbing, or
falls without bound (a loss heading to -inf is almost always a flipped sign).

Judged on block medians so minibatch noise and single bad batches do not count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import BlockMedians, theil_sen_slope
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class LossDivergenceThresholds(Thresholds):
    block: int = threshold(10, "Batches per block median.")
    min_blocks: int = threshold(3, "Blocks needed before judging.")
    trend_blocks: int = threshold(4, "Latest blocks whose trend must point away from the start.")
    rise: float = threshold(
        1.0, "Rise above the start, as a multiple of the start's magnitude (1.0: the loss doubled)."
    )
    fall: float = threshold(10.0, "Fall below the start into negative values, as a multiple of the start's magnitude.")


class LossDivergence(Detector[LossDivergenceThresholds]):
    """Start level vs current level of the block-median loss, plus the direction of the recent trend."""

    code = "loss_divergence"
    Thresholds = LossDivergenceThresholds

    def __init__(self, thresholds: LossDivergenceThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.blocks = BlockMedians(int(self.thresholds.block))

    def unjudged(self) -> str | None:
        need = int(self.thresholds.min_blocks * self.thresholds.block)
        return None if self.blocks.count >= need else f"needs {need} batches, saw {self.blocks.count}"

    def update(self, steps: Sequence[int], losses: Sequence[float] | np.ndarray) -> list[Diagnosis]:
        t = self.thresholds
        self.blocks.extend(steps, losses)
        values, at = self.blocks.values, self.blocks.steps
        if len(values) < t.min_blocks or not steps:
            return []
        start, current, best = values[0], values[-1], min(values)
        scale = abs(start) if start != 0 else max(abs(current), 1e-12)
        k = max(2, int(t.trend_blocks))
        slope = theil_sen_slope(at[-k:], values[-k:])
        decided = int(steps[-1])
        if current >= start + t.rise * scale and slope > 0:
            first = next(s for s, v in zip(at, values) if v >= start + t.rise * scale)
            message = (
                f"The training loss rose from {start:.4g} to {current:.4g} ({current / start:.3g}x its start; "
                f"best {best:.4g}) and is still rising; it crossed {1 + t.rise:g}x the start at step {first}."
                if start > 0
                else f"The training loss rose from {start:.4g} to {current:.4g} and is still rising."
            )
            evidence = {"start_loss": start, "best_loss": best, "current_loss": current, "first_step": first}
            return [self.diagnosis(decided, message, evidence)]
        if current < 0 and current <= start - t.fall * scale and slope < 0:
            message = (
                f"The training loss keeps falling without bound: {start:.4g} -> {current:.4g}. A loss that heads to "
                "-inf is usually maximised by mistake (negated sign) or unbounded below."
            )
            remedies = [
                "Check the sign of the loss: minimise a loss, maximise a score (return -score).",
                "Check that the loss is bounded below (e.g. log of a probability, not of an unbounded output).",
                "Lower the learning rate.",
            ]
            evidence = {"start_loss": start, "current_loss": current}
            return [self.diagnosis(decided, message, evidence, subject="falling", remedies=remedies)]
        return []
