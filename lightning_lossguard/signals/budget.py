"""The cost budget LossGuard keeps itself: its own time per step stays under a share of the step's time.

LossGuard times itself (two ``perf_counter`` reads per hook that does work, and per gradient pass and report)
and, at each report, compares its time per training batch with the batch's own time. Over budget, it measures per-layer
gradient norms on a stride of optimizer steps instead of every one (the one per-step cost that grows with the
model), and, when that is not enough and the user did not set ``report_every``, reports less often (judging
costs milliseconds per report). It plans both from what each part cost (:class:`CostBudget`), so it reaches the
right stride and interval at the first review after the warm-up instead of feeling its way there. Well under
budget, it goes back. In a run of known length the budget holds for the whole run: what the set-up and the
warm-up spent above it is paid back over the batches left. The loss is recorded on every step whatever the
budget: a NaN is seen on the step it happens.

Limits keep detection timely: at least ``min_samples`` gradient rows per report interval, and a report
interval at most ``max_report_factor`` times the default and, in a run of known length, short enough for
``min_reports`` reports in all (the callback keeps ``MIN_REPORTS_UNDER_BUDGET``). Time in Python's garbage
collector during LossGuard's hooks is not counted (a full collection lands wherever allocation triggers it).
Decisions use only this process's clock: under several ranks the budget does not adapt (every rank must
sample and report at the same steps).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any

GC_SECONDS = [0.0, 0.0]
"""[seconds spent in Python's garbage collector so far, start of the collection under way]: read ``[0]``
directly on the per-step path (no call), once :func:`watch_gc` has run."""


_clock = time.perf_counter  # bound once: a collection can start anywhere, even while a test patches ``time``


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        GC_SECONDS[1] = _clock()
    else:
        GC_SECONDS[0] += _clock() - GC_SECONDS[1]


def own_mark() -> tuple[float, float]:
    """A start mark for :func:`own_since`: the clock and the collector's time so far."""
    return time.perf_counter(), GC_SECONDS[0]


def own_since(mark: tuple[float, float]) -> float:
    """Seconds since ``mark`` less the collector's time since (:func:`watch_gc` must have run): what LossGuard itself
    spent. A full collection of a Lightning process takes ~0.1 s and lands in whatever code allocates at that
    moment; the run pays it with or without LossGuard. Every part of its time the budget splits out (gradient
    passes, samples, reports) leaves collections out, as its hooks' total does: a gradient pass that stacks 2,002
    small tensors triggers them often (~0.2 s of a 150-step run's 0.33 s of gradient passes was collections), and
    the parts then added up to more than the whole."""
    return time.perf_counter() - mark[0] - (GC_SECONDS[0] - mark[1])


_WATCHING = False


def watch_gc() -> None:
    """Start counting the collector's time (idempotent)."""
    global _WATCHING
    if _WATCHING:
        return
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    _WATCHING = True


MIN_REPORTS_UNDER_BUDGET = 10
"""However far over its cost budget, a run of known length still gets this many reports: a short run judged too
rarely sees a fault that grows within it (gradient growth, divergence) too late or not at all. Measured: with 4,
the corpus' faults were diagnosed 185 / 199 times instead of 191 / 199 (three runs with the learning rate x1000
said nothing), while a 400-step run of a ~1 ms model paid 6.3% of its step time instead of 11.1%. Detection wins;
a user who wants the cheaper run sets ``report_every`` (the over-budget note says so)."""


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
        monitor_seconds: of ``own_seconds``, the per-batch work of monitors that see sampled batches only (an
            ``OutputMonitor``'s sums): it comes on the stride's batches, as the gradient passes do.
        monitor_batches: how many batches those monitors saw.
    """

    batches: int
    own_seconds: float
    step_ms: float
    gradient_seconds: float = 0.0
    gradient_rows: int = 0
    report_seconds: float = 0.0
    monitor_seconds: float = 0.0
    monitor_batches: int = 0


@dataclass
class CostMeter:
    """LossGuard's own time since the last report, as the budget plans it: all of it, and of it the gradient-norm
    passes, the once-per-interval work (the report, the report-step samples) and the sampled monitors' batches."""

    own_seconds: float = 0.0
    gradient_seconds: float = 0.0
    interval_seconds: float = 0.0
    monitor_seconds: float = 0.0
    monitor_batches: int = 0

    def take(self, batches: int, step_ms: float, gradient_rows: int) -> IntervalCost:
        """The interval's cost over its ``batches`` (``gradient_rows`` gradient-norm passes); the meter restarts."""
        cost = IntervalCost(
            batches,
            self.own_seconds,
            step_ms,
            self.gradient_seconds,
            gradient_rows,
            self.interval_seconds,
            self.monitor_seconds,
            self.monitor_batches,
        )
        self.own_seconds = self.gradient_seconds = self.interval_seconds = self.monitor_seconds = 0.0
        self.monitor_batches = 0
        return cost


@dataclass
class CostBudget:
    """Chooses the gradient stride and the report interval that keep LossGuard's share of the step under budget.

    LossGuard's time per batch is ``fixed + (sample / accumulate + monitor) / stride + report / interval``: the
    hooks' fixed cost, one gradient-norm pass per sampled optimizer step, the sampled monitors' work per sampled
    batch (an ``OutputMonitor``'s), and the report's cost spread over its interval.
    Each review measures the three from the interval that just ended and plans for ``planning_margin`` of the
    budget: the shortest report interval, and in it the smallest stride, whose predicted cost fits. Over budget it
    takes that plan; well under (below ``relax_below`` of the budget) it takes a plan only if it measures more.

    Args:
        budget: the share of the step's time LossGuard may take (0.01: 1%); ``math.inf``: no budget (the user's
            ``budget=None``), whose run does not adapt.
        report_batches: training batches between reports, as configured.
        adaptive_reports: whether the report interval may grow (False when the user set ``report_every``).
        min_samples: gradient rows per report interval, at least (exploding-gradient detection needs a few).
        max_report_factor: the report interval grows to at most this many times the configured one.
        accumulate: training batches per optimizer step (gradient accumulation); the stride counts optimizer steps.
        min_reports: a run of known length (``planned_batches``) keeps at least this many reports in all (0: no
            such floor): the interval never grows past the batches left at the first plan over the reports still
            owed then, the report at the run's end included (the warm-up's reports count; reports added later, at a
            validation end say, do not lengthen it). A short run judged too rarely sees a fast-growing fault too
            late.
        warmup_reviews: the first reviews do not plan: the first interval holds the run's one-time set-up (hooks,
            the graph walk) and the second the first report's (the layout), not the steady state. They only take the
            stride every plan would reach anyway: one gradient pass per step over the whole budget cannot fit.
        planning_margin: the share of the budget a plan aims at (measured costs vary from interval to interval).
        relax_below: under this share of the budget, a plan that measures more often is taken.
        adapt: whether reviews change the stride and the interval (False under several ranks; always False without
            a budget, ``math.inf``: there is nothing to keep under).
        planned_batches: the run's length in training batches, when known (0: unknown). The budget is then kept
            over the whole run: what the set-up and the warm-up spent above it is paid back over the batches left
            (each later interval is allowed that much less per batch).
    """

    budget: float
    report_batches: int
    adaptive_reports: bool = True
    min_samples: int = 10
    max_report_factor: int = 8
    accumulate: int = 1
    min_reports: int = 0
    warmup_reviews: int = 2
    planning_margin: float = 0.8
    relax_below: float = 0.5
    adapt: bool = True
    planned_batches: int = 0
    stride: int = 1
    base_report_batches: int = 0
    share: float = math.nan
    own_us: float = math.nan
    step_ms: float = math.nan
    reviews: int = 0
    reports: int = 0
    floor_batches: int = 0  # the longest interval that keeps min_reports in the run (set at a plan; cleared by replan)
    spent_own_us: float = 0.0  # LossGuard's time so far, over the reviewed intervals
    spent_step_us: float = 0.0  # the training batches' time so far (median batch times the batches)
    seen_batches: int = 0
    spent_report_us: float = 0.0  # of spent_own_us, the reports and their report-step samples
    spent_gradient_us: float = 0.0  # of spent_own_us, the gradient-norm passes
    gradient_rows: int = 0  # the gradient-norm passes so far
    spent_monitor_us: float = 0.0  # of spent_own_us, the sampled monitors' batches
    monitor_batches: int = 0  # the batches those monitors saw so far
    fixed_us: float = math.nan  # of own_us, the hooks' cost per batch (neither gradient passes nor reports)
    limited_by: str = ""  # why the last review's plan could not fit the budget ("" when it fit): see _limit

    def __post_init__(self) -> None:
        self.base_report_batches = self.report_batches
        self.adapt = self.adapt and math.isfinite(self.budget)

    @property
    def stretched(self) -> bool:
        """Whether reports come less often than configured (a cheaper check keeps a NaN's latency short)."""
        return self.report_batches > self.base_report_batches

    def samples(self, batch: int, step: int, before_report: bool) -> tuple[bool, bool]:
        """Whether the batch is timed and whether its optimizer step's gradients are measured: every ``stride``-th
        batch and every ``stride``-th optimizer step, and always the last batch before a report (the report-step
        samples are taken there). One call for both: it runs first in every batch, on a cold cache."""
        stride = self.stride
        if stride == 1 or before_report:
            return True, True
        return batch % stride == 0, step % stride == 0

    def review(self, cost: IntervalCost) -> None:
        """At a report: measure what the interval that just ended cost, and plan the next one."""
        self.reports += 1
        if cost.batches <= 0 or not math.isfinite(cost.step_ms) or cost.step_ms <= 0:
            return
        self.own_us = cost.own_seconds / cost.batches * 1e6
        self.step_ms = cost.step_ms
        self.share = self.own_us / 1e3 / cost.step_ms
        self.reviews += 1
        self.spent_own_us += cost.own_seconds * 1e6
        self.spent_step_us += cost.batches * cost.step_ms * 1e3
        self.spent_report_us += cost.report_seconds * 1e6
        self.spent_gradient_us += cost.gradient_seconds * 1e6
        self.gradient_rows += cost.gradient_rows
        self.spent_monitor_us += cost.monitor_seconds * 1e6
        self.monitor_batches += cost.monitor_batches
        self.seen_batches += cost.batches
        if not self.adapt:
            self.limited_by = "ranks" if math.isfinite(self.budget) else "off"
            return
        sample_us = cost.gradient_seconds * 1e6 / cost.gradient_rows if cost.gradient_rows else 0.0
        limit_us = max(0.0, self.budget * cost.step_ms * 1e3 - self._repayment_us())
        allowed_us = self.planning_margin * limit_us
        if self.reviews <= self.warmup_reviews:
            self.stride = max(self.stride, self._stride_floor(sample_us, allowed_us))
            self.limited_by = "warm_up"
            return
        report_us = cost.report_seconds * 1e6
        monitor_us = cost.monitor_seconds * 1e6 / cost.monitor_batches if cost.monitor_batches else 0.0
        sampled = (cost.gradient_seconds + cost.monitor_seconds) * 1e6
        fixed_us = max(0.0, self.own_us - (sampled + report_us) / cost.batches)
        self.fixed_us = fixed_us
        interval, stride, fits = self._plan(fixed_us, sample_us / self.accumulate + monitor_us, report_us, allowed_us)
        self.limited_by = "" if fits else self._limit()
        stretches = (interval, stride) > (self.report_batches, self.stride)
        if (self.own_us > limit_us and stretches) or (self.own_us < limit_us * self.relax_below and not stretches):
            self.report_batches, self.stride = interval, stride

    def change_accumulation(self, accumulate: int) -> None:
        """A new accumulation (a ``GradientAccumulationScheduler`` at an epoch start): the report intervals keep
        their optimizer steps, so that reports still end a window and a run still gets the reports it is owed."""
        steps = self.report_batches // self.accumulate, self.base_report_batches // self.accumulate
        self.report_batches, self.base_report_batches = (max(1, n) * accumulate for n in steps)
        self.accumulate = accumulate
        self.floor_batches = 0

    def replan(self, planned_batches: int) -> None:
        """The run's length as it now stands (a loader reloaded with another length, an accumulation that changed
        where ``max_steps`` ends the run): the next plan spreads the reports still owed over what is left."""
        if planned_batches != self.planned_batches:
            self.planned_batches = planned_batches
            self.floor_batches = 0

    def _repayment_us(self) -> float:
        """Per batch left in a run of known length, what was spent so far above the budget (0 when under it)."""
        left = self.planned_batches - self.seen_batches
        if self.planned_batches <= 0 or left <= 0:
            return 0.0
        return max(0.0, self.spent_own_us - self.budget * self.spent_step_us) / left

    def _plan(self, fixed_us: float, sampled_us: float, report_us: float, allowed_us: float) -> tuple[int, int, bool]:
        """The shortest report interval, then the smallest stride, whose predicted cost per batch fits; when none
        fits, the cheapest plan the limits allow. The last item says whether it fits. ``sampled_us``: what the
        stride divides, per batch (the gradient pass per optimizer step over the accumulation, and the sampled
        monitors' batch)."""
        cap = self._report_cap() if self.adaptive_reports else self.base_report_batches
        intervals = sorted({min(self.base_report_batches * k, cap) for k in range(1, self.max_report_factor + 1)})
        for interval in intervals:
            room = allowed_us - fixed_us - report_us / interval
            if room <= 0:
                continue
            stride = max(1, math.ceil(sampled_us / room))
            if stride <= self._max_stride(interval):
                return interval, stride, True
        return intervals[-1], self._max_stride(intervals[-1]), False

    def _limit(self) -> str:
        """Which limit on the report interval kept the cheapest plan over budget: ``report_every`` (the user's
        interval does not stretch), ``min_reports`` (the longest interval that keeps ``min_reports`` in the run),
        ``max_report_factor``; each interval with at least ``min_samples`` gradient passes. (The hooks' cost per
        batch, ``fixed_us``, may be over the budget on its own: no interval helps then.) A review also sets
        ``warm_up`` (it only measured), ``ranks`` (several ranks: no adapting) or ``off`` (no budget)."""
        if not self.adaptive_reports:
            return "report_every"
        if self.floor_batches and self.floor_batches < self.base_report_batches * self.max_report_factor:
            return "min_reports"
        return "max_report_factor"

    @property
    def run_share(self) -> float:
        """LossGuard's time over the training batches' time, over every reviewed interval of the run (the set-up's
        first batch and the warm-up included): what the run paid, where ``share`` is the last interval's. A report
        counts in the interval after it; the one at the end of the fit in the totals alone (:meth:`last_report`)."""
        return self.spent_own_us / self.spent_step_us if self.spent_step_us > 0 else math.nan

    def last_report(self, seconds: float) -> None:
        """The report at the end of the fit has no interval after it to be counted in: it joins what the run paid
        (``run_share``, the over-budget note's split), not an interval's share."""
        self.spent_own_us += seconds * 1e6
        self.spent_report_us += seconds * 1e6

    def _stride_floor(self, sample_us: float, allowed_us: float) -> int:
        """The stride below which no plan can go, whatever the fixed and report costs turn out to be (both only add
        to the gradient passes' cost): measured from the gradient passes alone, so the set-up does not bias it."""
        most = self._max_stride(self.base_report_batches)
        if sample_us <= 0:
            return 1
        if allowed_us <= 0:
            return most
        return min(most, max(1, math.ceil(sample_us / self.accumulate / allowed_us)))

    def _max_stride(self, interval: int) -> int:
        return max(1, interval // self.accumulate // self.min_samples)

    def _report_cap(self) -> int:
        cap = self.base_report_batches * self.max_report_factor
        if self.min_reports > 0 and self.planned_batches > 0:
            if not self.floor_batches:  # fixed at the first plan (after a replan): reports so far count, later ones not
                owed = max(1, self.min_reports - self.reports)
                # Over a share: the last report owed is the one the run's end writes anyway (the callback counts
                # intervals from the report that changed it), not an in-loop one a few batches before it or on the
                # last batch (where it would come twice). A whole number of optimizer steps, so that reports fall
                # where an accumulation window ends.
                steps_left = (self.planned_batches - self.seen_batches) // self.accumulate
                self.floor_batches = (steps_left // owed + 1) * self.accumulate
            cap = min(cap, self.floor_batches)
        return max(self.base_report_batches, cap)

    def state(self) -> dict[str, float]:
        """What the report says about the cost: the budget, the measured share, and what was adapted."""
        return {
            "budget": self.budget,
            "share": self.share,
            "own_us_per_step": self.own_us,
            "step_ms": self.step_ms,
            "gradient_stride": float(self.stride),
            "report_every_batches": float(self.report_batches),
            "run_share": self.run_share,
            "own_seconds": self.spent_own_us / 1e6,
            "batches": float(self.seen_batches),
            # What held the run over budget when a knob can change it (0 otherwise): the report floor of a short run
            # (with the run's planned optimizer steps, to suggest an interval) or the user's fixed report_every.
            "report_floor": float(self.min_reports) if self.limited_by == "min_reports" else 0.0,
            "planned_steps": float(self.planned_batches // max(1, self.accumulate)),
            "report_every_fixed": float(self.report_batches) if self.limited_by == "report_every" else 0.0,
        }
