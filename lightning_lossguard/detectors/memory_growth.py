"""``memory_growth``: host RSS or CUDA allocated memory grows steadily with steps (tensors or graphs kept
alive across steps, the usual companion of a slowing step)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import theil_sen_slope
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class MemoryGrowthThresholds(Thresholds):
    min_samples: int = threshold(6, "Report-step samples (after the first) needed before judging.")
    min_growth_mb: float = threshold(64.0, "Growth below this many MiB is never reported.")
    min_growth_fraction: float = threshold(0.10, "... nor growth below this fraction of the first sample.")
    rising_share: float = threshold(0.8, "Share of consecutive samples that must rise (steady, not one jump).")


class MemoryGrowth(Detector[MemoryGrowthThresholds]):
    """Samples of memory per report step; a steady climb with a positive Theil-Sen slope is reported."""

    code = "memory_growth"
    Thresholds = MemoryGrowthThresholds

    def __init__(self, thresholds: MemoryGrowthThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.samples: dict[str, list[list[float]]] = {}  # kind -> [step, MiB]
        self.seen: dict[str, int] = {}

    def update(self, step: int, memory_mb: dict[str, float | None]) -> list[Diagnosis]:
        """Add one sample per memory kind (``"host RSS"``, ``"CUDA allocated"``); None when unavailable."""
        t = self.thresholds
        found: list[Diagnosis] = []
        for kind, value in memory_mb.items():
            if value is None or not math.isfinite(value):
                continue
            self.seen[kind] = self.seen.get(kind, 0) + 1
            if self.seen[kind] == 1:
                continue  # the first sample includes one-time allocations (first batch, optimizer state)
            series = self.samples.setdefault(kind, [])
            series.append([float(step), float(value)])
            del series[:-200]
            if len(series) < t.min_samples:
                continue
            steps = np.array([s for s, _ in series])
            values = np.array([v for _, v in series])
            growth = values[-1] - values[0]
            rising = float(np.mean(np.diff(values) > 0))
            slope = theil_sen_slope(steps, values)
            if growth < t.min_growth_mb or growth < t.min_growth_fraction * values[0]:
                continue
            if rising < t.rising_share or not slope > 0:
                continue
            message = (
                f"{kind} memory grew steadily from {values[0]:.0f} MiB to {values[-1]:.0f} MiB between steps "
                f"{steps[0]:.0f} and {steps[-1]:.0f} ({slope * 1000:.3g} MiB per 1000 steps)."
            )
            evidence = {
                "start_mb": float(values[0]),
                "now_mb": float(values[-1]),
                "mb_per_1000_steps": slope * 1000,
                "rising_share": rising,
            }
            found.append(self.diagnosis(step, message, evidence, subject=kind))
        return found
