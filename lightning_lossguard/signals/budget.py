"""The cost budget LossGuard keeps itself: its own time per step stays under a share of the step's time.

LossGuard times itself (two ``perf_counter`` reads per hook, and per gradient pass and report) and, at each
report, compares its time per training batch with the batch's own time. Over budget, it measures per-layer
gradient norms on a stride of optimizer steps instead of every one (the one per-step cost that grows with the
model), and, when that is not enough and the user did not set ``report_every``, reports less often (judging
costs milliseconds per report). It plans both from what each part cost (:class:`CostBudget`), so it reaches the
right stride and interval at the first review after the warm-up instead of feeling its way there. Well under
budget, it goes back. The loss is recorded on every step whatever the budget: a NaN is seen on the step it
happens.

Limits keep detection timely: at least ``min_samples`` gradient rows per report interval, and a report
interval at most ``max_report_factor`` times the default and at most ``max_report_batches`` (the callback keeps
10 reports in a run of known length). Time in Python's garbage collector during
LossGuard's hooks is not counted (a full collection lands wherever allocation happens to trigger it).
Decisions use only this process's clock: under several ranks the budget does not adapt (every rank must
sample and report at the same steps).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any

_GC = [0.0, 0.0]  # [seconds spent in garbage collection so far, start of the collection under way]


_clock = time.perf_counter  # bound once: a collection can start anywhere, even while a test patches ``time``


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _GC[1] = _clock()
    else:
        _GC[0] += _clock() - _GC[1]


def gc_seconds() -> float:
    """Seconds spent in Python's garbage collector since LossGuard was first used. A full collection of a
    Lightning process takes ~0.1 s and lands in whatever code allocates at that moment: the budget does not
    count it as LossGuard's own time (the run pays it with or without LossGuard)."""
    if not _WATCHING:
        _watch_gc()
    return _GC[0]


_WATCHING = False


def _watch_gc() -> None:
    global _WATCHING
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    _WATCHING = True


@dataclass(frozen=True)
class IntervalCost:
    """What LossGuard spent between two reports, and on what: the budget's measurement.

    Attributes:
        batches: training batches in the interval.
        own_seconds: all of LossGuard's time in its hooks over them (reports included).
        step_ms: the median training batch's time.
        gradient_seconds: of ``own_seconds``, the per-layer gradient-norm passes.
        gradient_rows: how many of those passes there were.
        report_seconds: of ``own_seconds``, the once-per-interval work: the report and the report-step samples.
    """

    batches: int
    own_seconds: float
    step_ms: float
    gradient_seconds: float = 0.0
    gradient_rows: int = 0
    report_seconds: float = 0.0


@dataclass
class CostBudget:
    """Chooses the gradient stride and the report interval that keep LossGuard's share of the step under budget.

    LossGuard's time per batch is ``fixed + sample / (stride * accumulate) + report / interval``: the hooks'
    fixed cost, one gradient-norm pass per sampled optimizer step, and the report's cost spread over its interval.
    Each review measures the three from the interval that just ended and plans for ``planning_margin`` of the
    budget: the shortest report interval, and in it the smallest stride, whose predicted cost fits. Over budget it
    takes that plan; well under (below ``relax_below`` of the budget) it takes a plan only if it measures more.

    Args:
        budget: the share of the step's time LossGuard may take (0.01: 1%).
        report_batches: training batches between reports, as configured.
        adaptive_reports: whether the report interval may grow (False when the user set ``report_every``).
        min_samples: gradient rows per report interval, at least (exploding-gradient detection needs a few).
        max_report_factor: the report interval grows to at most this many times the configured one.
        accumulate: training batches per optimizer step (gradient accumulation); the stride counts optimizer steps.
        max_report_batches: the report interval never grows past this many batches (0: no cap beyond
            ``max_report_factor``). A run of known length passes its length over the reports it must keep: a short
            run judged too rarely sees a fast-growing fault too late.
        warmup_reviews: the first reviews measure but do not adapt: the first interval holds the run's one-time
            set-up (hooks, the graph walk) and the second the first report's (the layout), not the steady state.
        planning_margin: the share of the budget a plan aims at (measured costs vary from interval to interval).
        relax_below: under this share of the budget, a plan that measures more often is taken.
    """

    budget: float
    report_batches: int
    adaptive_reports: bool = True
    min_samples: int = 10
    max_report_factor: int = 8
    accumulate: int = 1
    max_report_batches: int = 0
    warmup_reviews: int = 2
    planning_margin: float = 0.8
    relax_below: float = 0.5
    adapt: bool = True
    stride: int = 1
    base_report_batches: int = 0
    share: float = math.nan
    own_us: float = math.nan
    step_ms: float = math.nan
    reviews: int = 0

    def __post_init__(self) -> None:
        self.base_report_batches = self.report_batches

    @property
    def stretched(self) -> bool:
        """Whether reports come less often than configured (a cheaper check keeps a NaN's latency short)."""
        return self.report_batches > self.base_report_batches

    def samples(self, index: int, before_report: bool) -> bool:
        """Whether the batch or optimizer step ``index`` is measured: every ``stride``-th, and always the last
        batch before a report (the report-step samples are taken there)."""
        return self.stride == 1 or before_report or index % self.stride == 0

    def review(self, cost: IntervalCost) -> None:
        """At a report: measure what the interval that just ended cost, and plan the next one."""
        if cost.batches <= 0 or not math.isfinite(cost.step_ms) or cost.step_ms <= 0:
            return
        self.own_us = cost.own_seconds / cost.batches * 1e6
        self.step_ms = cost.step_ms
        self.share = self.own_us / 1e3 / cost.step_ms
        self.reviews += 1
        if not self.adapt or self.reviews <= self.warmup_reviews:
            return
        report_us = cost.report_seconds * 1e6
        sample_us = cost.gradient_seconds * 1e6 / cost.gradient_rows if cost.gradient_rows else 0.0
        fixed_us = max(0.0, self.own_us - (cost.gradient_seconds * 1e6 + report_us) / cost.batches)
        allowed_us = self.budget * self.planning_margin * cost.step_ms * 1e3
        interval, stride = self._plan(fixed_us, sample_us, report_us, allowed_us)
        stretches = (interval, stride) > (self.report_batches, self.stride)
        if (self.share > self.budget and stretches) or (self.share < self.budget * self.relax_below and not stretches):
            self.report_batches, self.stride = interval, stride

    def _plan(self, fixed_us: float, sample_us: float, report_us: float, allowed_us: float) -> tuple[int, int]:
        """The shortest report interval, then the smallest stride, whose predicted cost per batch fits."""
        cap = self._report_cap() if self.adaptive_reports else self.base_report_batches
        intervals = sorted({min(self.base_report_batches * k, cap) for k in range(1, self.max_report_factor + 1)})
        for interval in intervals:
            room = allowed_us - fixed_us - report_us / interval
            if room <= 0:
                continue
            stride = max(1, math.ceil(sample_us / self.accumulate / room))
            if stride <= self._max_stride(interval):
                return interval, stride
        return intervals[-1], self._max_stride(intervals[-1])

    def _max_stride(self, interval: int) -> int:
        return max(1, interval // self.accumulate // self.min_samples)

    def _report_cap(self) -> int:
        cap = self.base_report_batches * self.max_report_factor
        return max(self.base_report_batches, min(cap, self.max_report_batches) if self.max_report_batches > 0 else cap)

    def state(self) -> dict[str, float]:
        """What the report says about the cost: the budget, the measured share, and what was adapted."""
        return {
            "budget": self.budget,
            "share": self.share,
            "own_us_per_step": self.own_us,
            "step_ms": self.step_ms,
            "gradient_stride": float(self.stride),
            "report_every_batches": float(self.report_batches),
        }
