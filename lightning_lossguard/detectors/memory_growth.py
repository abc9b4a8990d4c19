"""``memory_growth``: host memory (RSS) or CUDA allocated memory grows steadily with steps (tensors or graphs kept
alive across steps, the usual companion of a slowing step).

Steady means spread over the run: memory that steps up once (unfreezing a backbone allocates its gradients
and optimizer state, a cache fills) and then stays flat is not growth. The largest single step between
samples must be less than ``max_jump_share`` of the total growth, the first half of the series must add
``early_share`` of it and the second half ``late_share`` (a leak keeps its pace), and the rise must be
monotone (Mann-Kendall z >= ``z``; chance probability about 0.0013 per report).

Host RSS also grows while the allocator settles into new allocation sizes and keeps what it freed: resident
memory that no object holds. Where glibc's malloc can say how much it keeps free (``mallinfo2``, glibc 2.33+), the
judged host series is "host memory in use", the RSS less that free memory: a healthy S4D fit in a corpus worker
gained 74 MiB of RSS in 346 steps, rising at 73% of its reports (re-measured in a worker after six other fits: RSS
+81 MiB, malloc's free memory +80 MiB). Where it cannot (macOS, another allocator, an older glibc), the series is
"host RSS" as it is, and ``late_share`` is the guard: a GPT whose
sequence length grows over a warm-up gained 56 MiB in 320 steps (over 64 MiB in a corpus worker), two thirds of it
in the first half, while a leak keeps its pace.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import mann_kendall, theil_sen_slope
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class MemoryGrowthThresholds(Thresholds):
    min_samples: int = threshold(8, "Report-step samples (after the first) needed before judging.", low=4)
    min_growth_mb: float = threshold(64.0, "Growth below this many MiB is never reported.")
    min_growth_fraction: float = threshold(0.10, "... nor growth below this fraction of the first sample.")
    rising_share: float = threshold(0.6, "Share of consecutive samples that must rise.", high=1)
    max_jump_share: float = threshold(
        0.5, "The largest single step may be at most this share of the total growth (not one jump).", high=1
    )
    early_share: float = threshold(
        0.25, "The first half of the samples must add more than this share of the growth.", high=0.5
    )
    late_share: float = threshold(
        0.4, "The second half must add more than this share of the growth: a leak keeps its pace.", high=0.5
    )
    z: float = threshold(3.0, "Mann-Kendall z of the samples: the rise must be monotone.", low=1)


class MemoryGrowth(Detector[MemoryGrowthThresholds]):
    """Samples of memory per report step; a steady climb with a positive Theil-Sen slope is reported."""

    code = "memory_growth"
    Thresholds = MemoryGrowthThresholds

    def __init__(self, thresholds: MemoryGrowthThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.samples: dict[str, list[list[float]]] = {}  # kind -> [step, MiB]
        self.seen: dict[str, int] = {}

    def update(self, step: int, memory_mb: dict[str, float | None]) -> list[Diagnosis]:
        """Add one sample per memory kind (``"host memory in use"`` or ``"host RSS"``, ``"CUDA allocated"``); None when
        unavailable."""
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
            steps_up = np.diff(values)
            half = len(values) // 2
            spread = steps_up.max() <= t.max_jump_share * growth
            both_halves = (
                values[half] - values[0] > t.early_share * growth and values[-1] - values[half] > t.late_share * growth
            )
            if not (spread and both_halves) or mann_kendall(values) < t.z:
                continue  # one step up (or a few), not a steady climb
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
