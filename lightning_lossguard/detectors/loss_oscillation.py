"""``loss_oscillation``: the training loss swings up and down by a large factor, cycle after cycle,
with no downward trend (momentum or learning rate too high).

Minibatch noise also moves the loss up and down, but it is uncorrelated from batch to batch; a real
oscillation is structured. On the last ``window`` losses (log10 scale) the detector requires:
- many large swings of the smoothed curve (a zig-zag count with hysteresis ``swing``),
- structure: |lag-1 autocorrelation| of the detrended losses above ``min_autocorrelation``
  (period-2 flip-flops give about -1, slow cycles about +1, noise about 0),
- no trend that is large compared with the swings,
- a learning rate that does not cycle itself: loss cycles that follow a cyclic or warm-restart schedule are
  intended.

Cycles of a few steps (``short_cycle`` or less: the loss alternates batch by batch) are an **info**, with the
order of the batches named first: batches that take turns between tasks or data sources of different loss
levels (a round-robin multi-task loop) make exactly this curve, and the loss alone cannot tell it from a
learning rate that makes the weights bounce (the remedies still say that).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import fast_median, median, theil_sen_slope
from lightning_lossguard.diagnosis import Diagnosis, Severity


@dataclasses.dataclass(frozen=True)
class LossOscillationThresholds(Thresholds):
    window: int = threshold(100, "Recent batches examined.")
    warmup_steps: int = threshold(20, "Batches ignored at the start.")
    swing: float = threshold(0.3, "A swing moves the loss at least this many decades (0.3: 2x) from the last extreme.")
    min_swings: int = threshold(4, "Swings of the smoothed loss in the window (4: two up-down cycles).")
    min_autocorrelation: float = threshold(0.5, "Minimum absolute lag-1 autocorrelation of the detrended log-loss.")
    max_trend: float = threshold(
        1.0, "Net change over the window, as a multiple of the median swing, above which it is a trend."
    )
    trough: float = threshold(
        0.2, "Periodicity: the autocorrelation must fall below -trough at some lag T ...", open_low=True, high=1
    )
    recovery: float = threshold(
        0.15, "... and come back above +recovery between 1.5T and 3T: cycle after cycle, not wandering.", high=1
    )
    lr_swing: float = threshold(
        0.15, "A learning rate that swings this many decades twice in the window is a cyclic schedule.", open_low=True
    )
    short_cycle: int = threshold(
        4, "Cycles of this many steps or fewer follow the batch order as often as the optimizer: info.", low=2
    )


class LossOscillation(Detector[LossOscillationThresholds]):
    """Zig-zag count, autocorrelation and trend of the recent log-loss."""

    code = "loss_oscillation"
    Thresholds = LossOscillationThresholds

    def __init__(self, thresholds: LossOscillationThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.recent: deque[list[float]] = deque(maxlen=int(self.thresholds.window))
        self.rates: deque[float] = deque(maxlen=int(self.thresholds.window))
        self.skipped = 0

    def unjudged(self) -> str | None:
        t = self.thresholds
        need, seen = int(t.warmup_steps + t.window), self.skipped + len(self.recent)
        return None if len(self.recent) >= t.window else f"needs {need} batches, saw {seen}"

    def update(
        self,
        steps: Sequence[int],
        losses: Sequence[float] | np.ndarray,
        learning_rates: Sequence[float] | np.ndarray = (),
    ) -> list[Diagnosis]:
        t = self.thresholds
        n = len(steps)
        values = np.asarray(losses, dtype=np.float64).reshape(-1)
        rates = np.asarray(learning_rates, dtype=np.float64) if len(learning_rates) == n else np.full(n, math.nan)
        skip = min(n, max(0, int(t.warmup_steps) - self.skipped))
        self.skipped += skip
        keep = np.flatnonzero(np.isfinite(values[skip:])) + skip
        keep = keep[-int(t.window) :]  # only the last window's batches are judged
        x = np.asarray(steps, dtype=np.float64)[keep].tolist()
        self.recent.extend([s, v] for s, v in zip(x, values[keep].tolist()))
        self.rates.extend(rates[keep].tolist())
        if len(self.recent) < t.window or not steps:
            return []
        x, raw = (
            np.fromiter(itertools.chain.from_iterable(self.recent), np.float64, 2 * len(self.recent)).reshape(-1, 2).T
        )
        # Signed losses are normalised by their typical magnitude, in "decades-like" units.
        y = np.log10(raw) if (raw > 0).all() else raw / max(fast_median(np.abs(raw)), 1e-12)
        if np.ptp(y) < t.swing and t.min_swings > 0:
            return []  # no move of a swing fits in the window's range: the common case, and the cheap test
        # Period-2 flip-flops vanish under smoothing: count them on the raw series.
        swings = max(_zigzag(np.convolve(y, np.ones(3) / 3, mode="valid"), t.swing), _zigzag(y, t.swing), key=len)
        if len(swings) < t.min_swings:
            return []
        lr = np.log10([r for r in self.rates if r > 0 and math.isfinite(r)])
        if lr.size > 2 and np.ptp(lr) >= t.lr_swing and len(_zigzag(lr, t.lr_swing)) >= 2:
            return []  # the schedule cycles the learning rate: cycles of the loss are intended
        slope = theil_sen_slope(x, y)
        trend = abs(slope * (x[-1] - x[0]))
        amplitude = median(swings)
        if trend > t.max_trend * amplitude:
            return []
        residual = y - (slope * (x - x[0]) + fast_median(y - slope * (x - x[0])))
        r1 = _lag1(residual)
        if abs(r1) < t.min_autocorrelation:
            return []
        cycle = _period(residual, t.trough, t.recovery)
        if cycle is None:
            return []  # correlated wandering (a moving target, a replay buffer), not cycle after cycle
        factor = 10**amplitude if (raw > 0).all() else math.nan
        period = "every other step (period 2)" if cycle <= 2 else f"in cycles of about {cycle} steps"
        message = (
            f"The training loss swings {len(swings)} times in the last {len(y)} batches"
            + (f" by about {factor:.3g}x" if factor == factor else "")
            + f", {period}, with no downward trend (lag-1 autocorrelation {r1:+.2f})."
        )
        evidence = {
            "swings": len(swings),
            "window": len(y),
            "swing_factor": factor,
            "autocorrelation": r1,
            "period": cycle,
            "trend_decades": trend,
            "low": float(raw.min()),
            "high": float(raw.max()),
        }
        if cycle > t.short_cycle:
            return [self.diagnosis(int(steps[-1]), message, evidence)]
        message += (
            " Batches that take turns between tasks or data sources with different loss levels do exactly this; "
            "if yours do not, the weights bounce: the learning rate is too high."
        )
        remedies = (BATCH_ORDER, *code_info(self.code).remedies)
        return [
            dataclasses.replace(
                self.diagnosis(int(steps[-1]), message, evidence, remedies=remedies), severity=Severity.INFO
            )
        ]


BATCH_ORDER = (
    "If batches take turns between tasks or datasets, this curve is expected: draw each batch's task at random "
    "or mix the tasks within a batch, or set LossGuard(suppress=['loss_oscillation'])."
)


def _zigzag(y: np.ndarray, swing: float) -> list[float]:
    """Sizes of the moves between confirmed turning points, each at least ``swing`` (hysteresis)."""
    pivots: list[float] = []
    if y.size < 2:
        return []
    values = y.tolist()  # a loop over Python floats: several times faster than over numpy scalars
    direction, high, low = 0, values[0], values[0]
    extreme = values[0]
    for v in values[1:]:
        if direction == 0:
            high, low = max(high, v), min(low, v)
            if high - v >= swing:
                pivots.append(high)
                direction, extreme = -1, v
            elif v - low >= swing:
                pivots.append(low)
                direction, extreme = 1, v
        elif direction > 0:
            if v > extreme:
                extreme = v
            elif extreme - v >= swing:
                pivots.append(extreme)
                direction, extreme = -1, v
        elif v < extreme:
            extreme = v
        elif v - extreme >= swing:
            pivots.append(extreme)
            direction, extreme = 1, v
    return [abs(b - a) for a, b in itertools.pairwise(pivots)]


def _period(y: np.ndarray, trough: float, recovery: float) -> int | None:
    """The cycle length (steps) when the autocorrelation swings negative and back positive, else None.

    A periodic oscillation's autocorrelation is negative at half its period and positive again at the full
    period; noise that is merely correlated from batch to batch (an AR process, a slowly moving target)
    decays towards zero without coming back."""
    y = y - y.mean()
    denominator = float(np.dot(y, y))
    if denominator <= 0:
        return None
    lags = y.size // 3
    acf = np.array([np.dot(y[:-k], y[k:]) / denominator for k in range(1, lags + 1)])
    low = np.flatnonzero(acf[: max(1, y.size // 4)] < -trough)
    if not low.size:
        return None
    half = int(low[0]) + 1  # the lag of the first trough
    window = acf[int(1.5 * half) : min(lags, 3 * half + 1)]
    if not window.size or window.max() <= recovery:
        return None
    return 2 * half


def _lag1(y: np.ndarray) -> float:
    y = y - y.mean()
    denominator = float(np.dot(y, y))
    return float(np.dot(y[:-1], y[1:]) / denominator) if denominator > 0 else 0.0
