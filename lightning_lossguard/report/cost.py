"""LossGuard's own cost, told to a person: one line for the end-of-fit summary, or, when the run paid more than its
budget, a note that says how much, in all, and which of the floors that keep detection timely held it there (the
budget decides; this module only words it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the lossguard command renders reports' cost lines without importing torch
    from lightning_lossguard.signals.budget import CostBudget

OVER_BUDGET_MARGIN = 1.25
"""A run is called over budget when its share is above this many times the budget: one run's measured share moves
by ~10% with the host's timing, and a note about noise would cry wolf."""


FEWER_REPORTS = 4
"""The report count the over-budget note suggests to a short run that wants to pay less (the user's choice: the
budget itself keeps 10)."""


def over_budget(share: float, budget: float) -> bool:
    """Whether a run's share ended above ``OVER_BUDGET_MARGIN`` times its budget."""
    return share > OVER_BUDGET_MARGIN * budget


def percent(share: float) -> str:
    """``0.01`` -> ``1%``, ``0.0075`` -> ``0.75%``, ``0.081`` -> ``8.1%``."""
    digits = 2 if share < 0.01 else 1
    return f"{share * 100:.{digits}f}".rstrip("0").rstrip(".") + "%"


def _spent(seconds: float, batches: float, step_ms: float) -> str:
    amount = f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.0f} ms"
    return f"{amount} in all over {batches:,.0f} training batches of {step_ms:.3g} ms"


def _spent_in(cost: Mapping[str, float]) -> str:
    return _spent(cost.get("own_seconds", math.nan), cost.get("batches", math.nan), cost.get("step_ms", math.nan))


def cost_line(cost: Mapping[str, float]) -> str | None:
    """``0.62% of the training step time (budget 1%; ...)``: LossGuard's own time, for a summary's ``cost:`` line,
    from the report's ``cost`` (:meth:`CostBudget.state`). None before any review, and for a run over budget (its
    note says more)."""
    share, budget = cost.get("run_share", math.nan), cost.get("budget", math.nan)
    if not math.isfinite(share) or over_budget(share, budget):
        return None
    spent = _spent_in(cost)
    limit = f"budget {percent(budget)}" if math.isfinite(budget) else "no budget"
    return (
        f"{percent(share)} of the training step time ({limit}; {spent}); gradient norms on 1 "
        f"optimizer step in {cost.get('gradient_stride', 1):.0f}, a report every "
        f"{cost.get('report_every_batches', math.nan):,.0f} batches."
    )


def over_budget_line(cost: Mapping[str, float]) -> str | None:
    """``26.2% of the training step time, over its 1% budget (89 ms in all over 200 training batches of 1.63 ms)``:
    a run over budget in one line, from the report's ``cost``, for a place with room for one (the console's summary,
    ``lossguard report``, the TensorBoard card: each keeps the note's why out of the notes). When the report floor
    held it there, the line ends with the knob: ``: a run this short keeps 10 reports; LossGuard(report_every=100)
    pays less with 4 (a fault is judged later)``; likewise when a ``report_every`` the user set did. None for a run
    within its budget and before any review."""
    share, budget = cost.get("run_share", math.nan), cost.get("budget", math.nan)
    if not math.isfinite(share) or not over_budget(share, budget):
        return None
    line = f"{percent(share)} of the training step time, over its {percent(budget)} budget ({_spent_in(cost)})"
    floor, planned = cost.get("report_floor", 0.0), cost.get("planned_steps", 0.0)
    fixed = cost.get("report_every_fixed", 0.0)
    if floor > 0 and planned > 0:
        line += (
            f": a run this short keeps {floor:.0f} reports; LossGuard(report_every={_fewer_reports_every(planned):,}) "
            f"pays less with {FEWER_REPORTS} (a fault is judged later)"
        )
    elif fixed > 0:
        line += f": report_every fixes a report every {fixed:,.0f} batches; a longer one, or none, pays less"
    return f"{line}."


def cost_and_notes(cost: Mapping[str, float], notes: Sequence[str]) -> tuple[str | None, list[str], str | None]:
    """What a summary shows of a report's cost and notes: the cost in one line, the notes to list, and the over-budget
    note the line stands for (left out of the notes: on a healthy short run it was the longest text under "no
    problems found", and read like a finding; the report keeps it)."""
    over = over_budget_line(cost)
    detail = next((n for n in notes if is_over_budget_note(n)), None) if over else None
    return cost_line(cost) or over, [n for n in notes if n != detail], detail


OVER_BUDGET_OPENING = "LossGuard's own time came to "
"""How the over-budget note begins: a report's notes are plain strings, and a reader that shows the cost apart
(the TensorBoard card) finds the note by it."""


def is_over_budget_note(note: str) -> bool:
    """Whether a report's note is the one :func:`over_budget_note` wrote."""
    return note.startswith(OVER_BUDGET_OPENING)


def over_budget_note(budget: CostBudget) -> str | None:
    """For a run whose share ended above ``OVER_BUDGET_MARGIN`` times the budget: how much, on what, and which floor
    held it there. None otherwise."""
    share = budget.run_share
    if not math.isfinite(share) or not over_budget(share, budget.budget):
        return None
    sampled_us = budget.spent_gradient_us + budget.spent_monitor_us
    rest_us = max(0.0, budget.spent_own_us - budget.spent_report_us - sampled_us)
    parts = [
        f"reports {_ms(budget.spent_report_us)}",
        f"{budget.gradient_rows:,} gradient measurements {_ms(budget.spent_gradient_us)}",
    ]
    if budget.monitor_batches:
        parts.append(f"monitors on {budget.monitor_batches:,} batches {_ms(budget.spent_monitor_us)}")
    parts.append(
        f"the rest {_ms(rest_us)} (the first batch's set-up; then, per batch, time marks, the loss kept, validations)"
    )
    spent = _spent(budget.spent_own_us / 1e6, budget.seen_batches, budget.step_ms)
    return (
        f"{OVER_BUDGET_OPENING}{percent(share)} of the training step time, over its "
        f"{percent(budget.budget)} budget: {spent}, of which {', '.join(parts)}. {_why(budget)}"
    )


def _fewer_reports(budget: CostBudget) -> str:
    """The knob for a run the report floor holds over budget: the user's own interval, which the floor does not
    bind (fewer reports, each fault judged later; on a 400-step run of a ~1 ms model, 4 reports halve the cost)."""
    every = _fewer_reports_every(budget.planned_batches // max(1, budget.accumulate))
    return (
        f"To pay less in runs this short, set the interval yourself, e.g. LossGuard(report_every={every:,}) for "
        f"{FEWER_REPORTS} reports; fewer reports judge a fault later, and can miss one that grows within the run."
    )


def _fewer_reports_every(planned_steps: float) -> int:
    """The interval that gives a run of ``planned_steps`` optimizer steps ``FEWER_REPORTS`` reports."""
    return max(1, int(planned_steps) // FEWER_REPORTS)


def _ms(us: float) -> str:
    return f"{us / 1e3:.0f} ms" if us >= 1e3 else f"{us / 1e3:.1f} ms"


def _why(budget: CostBudget) -> str:
    rows = f"at least {budget.min_samples} gradient measurements each"
    why = {
        "min_reports": (
            f"A run of {budget.planned_batches:,} batches keeps at least {budget.min_reports} reports with {rows}, so "
            "that a fault growing within it is judged in time: a run this short cannot spread them under the budget "
            f"at this step time (a longer one can). {_fewer_reports(budget)}"
        ),
        "max_report_factor": (
            f"Reports come at most {budget.max_report_factor} times less often than configured (now every "
            f"{budget.report_batches:,} batches), with {rows}: a longer report_every costs less."
        ),
        "report_every": (
            f"report_every fixes the report interval ({budget.report_batches:,} batches), with {rows}: a longer "
            "one, or none (the budget then stretches it), costs less."
        ),
        "warm_up": "The run ended within the warm-up, whose first reports only measure, to plan the rest.",
        "ranks": (
            "Under several ranks every rank must measure and report at the same steps, so the budget does not "
            "adapt: a longer report_every costs less."
        ),
    }.get(budget.limited_by, "")
    if math.isfinite(budget.fixed_us) and budget.fixed_us / 1e3 > budget.budget * budget.step_ms:
        why += (
            f" The cost per batch alone, {budget.fixed_us:.0f} µs, is over the budget at {budget.step_ms:.3g} ms "
            "per batch; it does not grow with the model."
        )
    return why.strip() or "What its start cost (the first batch's graph walk, the warm-up) was not paid back."
