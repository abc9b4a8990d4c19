"""``slowing_loss_step``: the per-step loss time grows steadily over training (seed 004).

Per-step times are compressed into block medians (one long pause or a GC hiccup disappears) and the
warm-up steps are skipped (first-step allocation, compilation). The climb must be large (``min_ratio``,
``min_increase_ms``) and gradual: block medians rise with the step (rank correlation) and pass through the
levels in between (``transition_blocks``), which a machine that suddenly gets busier does not do. A busier
machine also slows every phase alike, so the growth is measured against a control phase of the same
batches (the forward pass, or the optimizer step): only a loss that slows *relative to it* is reported.
That control fails when the two differ in length: a preemption lands on a phase in proportion to its length, so a
busier machine stretches a 4 ms loss's median and not a 0.1 ms forward's. Where the training thread's CPU time is
measured (CPU runs), the climb must also show in it (``min_cpu_share``): time spent preempted is not the loss's.

CPU time that grows is not always more work: the same work on subnormal floats (float32 values under ~1e-38, such
as an RBF kernel's ``exp`` of large negative numbers as its features spread) runs 10-100x slower on a CPU. The corpus'
deep-kernel GP does that: its Cholesky's CPU time goes from 0.4 to 1.4 ms a step over 120 steps, and stays at 0.4 ms
with ``torch.set_flush_denormal(True)``. So on a CPU run the remedies name subnormal floats second, after state that
grows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import BlockMedians, median, rank_correlation
from lightning_lossguard.diagnosis import Diagnosis

SUBNORMAL_REMEDY = (
    "On a CPU, look for subnormal floats: values driven towards zero (exp of large negative numbers, products of "
    "many probabilities) make float arithmetic 10-100x slower; torch.set_flush_denormal(True) flushes them to zero."
)
"""For a loss whose CPU time grew: the same work can get slower as its numbers turn subnormal."""


@dataclasses.dataclass(frozen=True)
class SlowingLossStepThresholds(Thresholds):
    warmup_steps: int = threshold(20, "Batches ignored at the start (allocation, compilation, caches).")
    block: int = threshold(10, "Batches per block median.")
    min_blocks: int = threshold(6, "Blocks after warm-up needed before judging.")
    edge_blocks: int = threshold(3, "Blocks averaged for the early and the recent level.")
    min_ratio: float = threshold(
        1.5, "Recent level must be this many times the early level, beyond the control's growth."
    )
    min_increase_ms: float = threshold(0.5, "... and at least this many milliseconds slower per step.")
    min_trend_correlation: float = threshold(
        0.8, "Rank correlation of block medians with the step: the climb must be steady ..."
    )
    transition_blocks: int = threshold(
        2, "... and this many blocks must sit between the early and the recent level (not a jump)."
    )
    min_cpu_share: float = threshold(
        0.5,
        "Where the training thread's CPU time is measured (CPU runs), at least this share of the climb in wall "
        "time must show in the loss's CPU time too: a machine busy with other work stretches wall time only.",
        high=1.0,
    )


class SlowingLossStep(Detector[SlowingLossStepThresholds]):
    """Watches the loss-step time (``loss`` phase when measured, else ``training_step``) for a steady climb."""

    code = "slowing_loss_step"
    Thresholds = SlowingLossStepThresholds

    def __init__(self, thresholds: SlowingLossStepThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.blocks = BlockMedians(int(self.thresholds.block))
        self.control = BlockMedians(int(self.thresholds.block))
        self.cpu = BlockMedians(int(self.thresholds.block))
        self.skipped = 0

    def unjudged(self) -> str | None:
        t = self.thresholds
        need = int(t.warmup_steps + t.min_blocks * t.block)
        seen = self.skipped + self.blocks.count
        return None if len(self.blocks.values) >= t.min_blocks else f"needs {need} timed batches, saw {seen}"

    def update(
        self,
        steps: Sequence[int],
        step_ms: Sequence[float] | np.ndarray,
        total_steps: int | None = None,
        what: str = "training_step (forward + loss)",
        control_ms: Sequence[float] | np.ndarray | None = None,
        control: str = "forward pass",
        cpu_ms: Sequence[float] | np.ndarray | None = None,
    ) -> list[Diagnosis]:
        """Add per-batch times (ms).

        Args:
            total_steps: planned run length, for the projected cost.
            what: how the timed phase is named in the message.
            control_ms: the same batches' time of a phase the loss does not affect (NaN where unmeasured).
            control: how the control phase is named in the message.
            cpu_ms: the same batches' loss time in CPU time of the training thread (NaN where unmeasured).
        """
        t = self.thresholds
        values = np.asarray(step_ms, dtype=np.float64)
        controls = np.full(len(values), np.nan) if control_ms is None else np.asarray(control_ms, dtype=np.float64)
        cpu = np.full(len(values), np.nan) if cpu_ms is None else np.asarray(cpu_ms, dtype=np.float64)
        keep = max(0, min(len(values), int(t.warmup_steps) - self.skipped))
        self.skipped += keep
        # Only batches with every measured time, so the series stay aligned block by block.
        chosen = np.isfinite(values) & (np.arange(len(values)) >= keep)
        for series in (controls, cpu):
            if np.isfinite(series).any():
                chosen &= np.isfinite(series)
        chosen_steps = np.asarray(steps)[chosen].tolist()
        self.blocks.extend(chosen_steps, values[chosen])
        if np.isfinite(controls).any():
            self.control.extend(chosen_steps, controls[chosen])
        if np.isfinite(cpu).any():
            self.cpu.extend(chosen_steps, cpu[chosen])
        n = len(self.blocks.values)
        if n < t.min_blocks or not steps:
            return []
        k = int(t.edge_blocks)
        early = median(self.blocks.values[:k])
        recent = median(self.blocks.values[-k:])
        drift = 1.0
        if len(self.control.values) == n:
            early_control = median(self.control.values[:k])
            drift = max(1.0, median(self.control.values[-k:]) / early_control) if early_control > 0 else 1.0
        expected = early * drift  # where the loss time would be if only the machine had slowed down
        if recent < t.min_ratio * expected or recent - expected < t.min_increase_ms:
            return []  # the usual case, decided without the costlier trend statistics
        halfway = expected + (recent - expected) / 2
        trend = rank_correlation(self.blocks.steps, self.blocks.values)
        rise = recent - expected
        between = sum(expected + 0.25 * rise < v < expected + 0.75 * rise for v in self.blocks.values)
        steady = (
            trend >= t.min_trend_correlation
            and between >= t.transition_blocks
            and all(v >= halfway for v in self.blocks.values[-k:])
        )
        if not (recent >= t.min_ratio * expected and recent - expected >= t.min_increase_ms and steady):
            return []
        cpu_rise = math.nan
        if len(self.cpu.values) == n:
            cpu_rise = median(self.cpu.values[-k:]) - median(self.cpu.values[:k])
            if cpu_rise < t.min_cpu_share * (recent - early):
                return []  # the wall time grew while the thread was not running: other work on the machine
        # Average rate between the middles of the early and the recent blocks (ms per step).
        span = median(self.blocks.steps[-k:]) - median(self.blocks.steps[:k])
        slope = (recent - early) / span if span > 0 else 0.0
        now = int(steps[-1])
        remaining = max(0, (total_steps or now) - now)
        # Extra time for the rest of the run if the climb continues: the current excess plus the trend.
        extra_s = ((recent - early) * remaining + slope * remaining**2 / 2) / 1e3
        control_text = f", while the {control} changed only {drift:.2f}x" if len(self.control.values) == n else ""
        if math.isfinite(cpu_rise):
            control_text += (
                f"; {cpu_rise:.3g} ms of the {recent - early:.3g} ms is CPU time: the training thread spent it (more "
                "work, or the same work on subnormal floats), not a busier machine"
            )
        message = (
            f"The {what} time grew from {early:.3g} ms to {recent:.3g} ms per step "
            f"({recent / early:.1f}x, +{slope * 1000:.3g} ms per 1000 steps) between steps "
            f"{self.blocks.steps[0]} and {self.blocks.steps[-1]}{control_text}"
            + (f"; at this rate the remaining {remaining} steps cost {_duration(extra_s)} extra." if remaining else ".")
        )
        evidence = {
            "start_ms": early,
            "now_ms": recent,
            "ratio": recent / early if early > 0 else math.inf,
            "control_ratio": drift,
            "trend_correlation": trend,
            "growth_ms_per_1000_steps": slope * 1000,
            "projected_extra_s": extra_s,
            "first_step": self.blocks.steps[0],
        }
        if not math.isfinite(cpu_rise):
            return [self.diagnosis(now, message, evidence)]
        evidence["cpu_growth_ms"] = cpu_rise
        growing_state, *rest = code_info(self.code).remedies
        return [self.diagnosis(now, message, evidence, remedies=[growing_state, SUBNORMAL_REMEDY, *rest])]


def _duration(seconds: float) -> str:
    """A duration in the unit a person reads it in: a short run's extra time is milliseconds, not "0 s"."""
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
