"""The cost budget LossGuard keeps itself: its own time per step stays under a share of the step's time.

LossGuard times itself (two ``perf_counter`` reads per hook) and, at each report, compares its time per
training batch with the batch's own time. Over budget, it measures per-layer gradient norms on a stride of
optimizer steps instead of every one (the one per-step cost that grows with the model), and, when that is not
enough and the user did not set ``report_every``, reports less often (judging costs milliseconds per report).
Well under budget, it goes back. The loss is recorded on every step whatever the budget: a NaN is seen on
the step it happens.

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


@dataclass
class CostBudget:
    """Adapts the gradient stride and the report interval to keep LossGuard's share of the step under budget.

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
    """

    budget: float
    report_batches: int
    adaptive_reports: bool = True
    min_samples: int = 10
    max_report_factor: int = 8
    accumulate: int = 1
    max_report_batches: int = 0
    warmup_reviews: int = 2
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

    def review(self, batches: int, own_seconds: float, step_ms: float) -> None:
        """At a report: LossGuard took ``own_seconds`` over ``batches`` training batches whose median time was
        ``step_ms``; adjust the stride and the report interval for the next interval."""
        if batches <= 0 or not math.isfinite(step_ms) or step_ms <= 0:
            return
        self.own_us = own_seconds / batches * 1e6
        self.step_ms = step_ms
        self.share = self.own_us / 1e3 / step_ms
        self.reviews += 1
        if not self.adapt or self.reviews <= self.warmup_reviews:
            return
        max_stride = max(1, self.report_batches // self.accumulate // self.min_samples)
        if self.share > self.budget:
            if self.stride < max_stride:
                self.stride = min(max_stride, self.stride * 2)
            elif self.adaptive_reports and self.report_batches < self._report_cap():
                self.report_batches = min(self.report_batches * 2, self._report_cap())
        elif self.share < self.budget / 4:
            if self.report_batches > self.base_report_batches:
                self.report_batches = max(self.report_batches // 2, self.base_report_batches)
            elif self.stride > 1:
                self.stride //= 2

    def _report_cap(self) -> int:
        cap = self.base_report_batches * self.max_report_factor
        return min(cap, self.max_report_batches) if self.max_report_batches > 0 else cap

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
