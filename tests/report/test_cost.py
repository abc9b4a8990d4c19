"""LossGuard's cost told to a person: the summary's cost line, and the note for a run over budget that says how
much, on what, and which floor held it there; end to end in real fits."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from lightning_lossguard.report.console import ConsoleReporter
from lightning_lossguard.report.cost import (
    OVER_BUDGET_MARGIN,
    cost_and_notes,
    cost_line,
    is_over_budget_note,
    over_budget_line,
    over_budget_note,
    percent,
)
from lightning_lossguard.signals.budget import CostBudget, IntervalCost
from tests.conftest import trainer


def reviewed(share: float, limited_by: str = "", fixed_us: float = 20.0, **options: int) -> CostBudget:
    """A budget after one reviewed interval of 100 batches of 10 ms in which LossGuard took ``share`` of it: a
    third in 10 gradient passes, a third in the report."""
    budget = CostBudget(0.01, report_batches=100, warmup_reviews=0, **options)  # type: ignore[arg-type]
    own = share * 100 * 10e-3
    budget.review(IntervalCost(100, own, 10.0, own / 3, 10, own / 3))
    budget.limited_by, budget.fixed_us = limited_by, fixed_us
    return budget


def test_percentages_keep_two_significant_digits() -> None:
    assert [percent(x) for x in (0.01, 0.0075, 0.081, 0.2, 0.00626)] == ["1%", "0.75%", "8.1%", "20%", "0.63%"]


def test_under_budget_a_cost_line_and_no_note() -> None:
    budget = reviewed(0.008)
    assert over_budget_note(budget) is None
    assert cost_line(budget.state()) == (
        "0.8% of the training step time (budget 1%; 8 ms in all over 100 training batches of 10 ms); gradient "
        "norms on 1 optimizer step in 1, a report every 100 batches."
    )
    assert over_budget_note(reviewed(0.01 * OVER_BUDGET_MARGIN)) is None  # noise-level excess is not a note
    assert cost_line(CostBudget(0.01, report_batches=100).state()) is None  # nothing reviewed: nothing to say
    assert cost_line(reviewed(0.06).state()) is None  # over budget: the note says it, with what bound it


def test_over_budget_the_run_has_a_one_line_headline_and_its_note_is_recognised() -> None:
    over = reviewed(0.06)
    assert over_budget_line(over.state()) == (
        "6% of the training step time, over its 1% budget (60 ms in all over 100 training batches of 10 ms)."
    )
    assert over_budget_line(reviewed(0.008).state()) is None  # within budget: the cost line says it
    assert over_budget_line(reviewed(0.01 * OVER_BUDGET_MARGIN).state()) is None  # noise-level excess
    assert over_budget_line(CostBudget(0.01, report_batches=100).state()) is None  # nothing reviewed
    note = over_budget_note(over)
    assert note is not None and is_over_budget_note(note)
    assert not is_over_budget_note("Run too short to judge a plateau.")


def test_held_over_budget_by_the_report_floor_the_line_names_the_knob_and_stands_for_the_note() -> None:
    over = reviewed(0.06, "min_reports", min_reports=10, planned_batches=400)
    line = over_budget_line(over.state())
    assert line == (
        "6% of the training step time, over its 1% budget (60 ms in all over 100 training batches of 10 ms): a run "
        "this short keeps 10 reports; LossGuard(report_every=100) pays less with 4 (a fault is judged later)."
    )
    note = over_budget_note(over)
    assert note is not None
    assert cost_and_notes(over.state(), ["a note", note]) == (line, ["a note"], note)
    fixed = reviewed(0.06, "report_every", min_reports=10, planned_batches=400)  # the user's own interval
    assert over_budget_line(fixed.state()) == (
        "6% of the training step time, over its 1% budget (60 ms in all over 100 training batches of 10 ms): "
        "report_every fixes a report every 100 batches; a longer one, or none, pays less."
    )
    other = reviewed(0.06, "ranks", min_reports=10, planned_batches=400)  # the note says why; the line, how much
    assert over_budget_line(other.state()) == over_budget_line(reviewed(0.06).state())
    within = reviewed(0.008)
    assert cost_and_notes(within.state(), ["a note"]) == (cost_line(within.state()), ["a note"], None)
    assert cost_and_notes({}, ["a note"]) == (None, ["a note"], None)  # no budget: the notes as they are


def test_without_a_budget_the_cost_line_says_so_and_there_is_never_a_note() -> None:
    off = CostBudget(math.inf, report_batches=100)
    off.review(IntervalCost(100, 0.5, 10.0, 0.2, 100, 0.1))  # 50% of the step: no budget to be over
    assert over_budget_note(off) is None
    assert cost_line(off.state()) == (
        "50% of the training step time (no budget; 500 ms in all over 100 training batches of 10 ms); gradient "
        "norms on 1 optimizer step in 1, a report every 100 batches."
    )


@pytest.mark.parametrize(
    ("limited_by", "says"),
    [
        ("min_reports", "A run of 400 batches keeps at least 10 reports with at least 10 gradient measurements each"),
        ("min_reports", "set the interval yourself, e.g. LossGuard(report_every=100) for 4 reports"),
        ("max_report_factor", "Reports come at most 8 times less often than configured (now every 100 batches)"),
        ("report_every", "report_every fixes the report interval (100 batches)"),
        ("warm_up", "The run ended within the warm-up"),
        ("ranks", "Under several ranks every rank must measure and report at the same steps"),
        ("", "What its start cost"),
    ],
)
def test_over_budget_the_note_says_how_much_on_what_and_which_floor(limited_by: str, says: str) -> None:
    note = over_budget_note(reviewed(0.06, limited_by, min_reports=10, planned_batches=400))
    assert note is not None and says in note
    assert note.startswith(
        "LossGuard's own time came to 6% of the training step time, over its 1% budget: 60 ms in all over 100 "
        "training batches of 10 ms, of which reports 20 ms, 10 gradient measurements 20 ms, the rest 20 ms (the "
        "first batch's set-up"
    )
    assert "cost per batch alone" not in note


def test_a_per_batch_cost_over_the_budget_on_its_own_is_named() -> None:
    note = over_budget_note(reviewed(0.06, "min_reports", fixed_us=150.0, min_reports=10, planned_batches=400))
    assert note is not None and "The cost per batch alone, 150 µs, is over the budget at 10 ms per batch" in note


def test_the_console_summary_prints_the_cost_line() -> None:
    out = io.StringIO()
    ConsoleReporter(Console(file=out, width=300, color_system=None)).summary([], [], "/r.json", cost="0.8% of it")
    assert out.getvalue().splitlines()[1:] == ["  cost: 0.8% of it", "  report: /r.json"]


def test_a_short_fast_run_says_it_went_over_budget_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = build("adam_regression")
    guard = LossGuard(budget=1e-4)  # a budget no run meets: the floor of 10 reports holds the cost above it
    t = trainer(tmp_path, [guard], max_steps=400)
    t.fit(run.module, run.train)
    [note] = [n for n in guard.notes if n.startswith("LossGuard's own time came to")]
    assert "over its 0.01% budget" in note and "keeps at least 10 reports" in note
    report = json.loads((Path(t.log_dir) / "lossguard.json").read_text())  # type: ignore[arg-type]
    assert note in report["notes"]
    assert report["cost"]["run_share"] > 1.25e-4 and report["cost"]["own_seconds"] > 0
    out = " ".join(capsys.readouterr().out.split())
    # The console: one cost line that names the knob; what the time went on stays in the report.
    assert "cost: " in out and "over its 0.01% budget" in out
    assert "keeps 10 reports; LossGuard(report_every=100) pays less with 4" in out and "of which reports" not in out
    # The note's knob does what it says: the user's own interval, which the floor does not bind.
    assert "LossGuard(report_every=100) for 4 reports" in note and guard._budget is not None
    fewer = LossGuard(budget=1e-4, report_every=100)
    trainer(tmp_path / "fewer", [fewer], max_steps=400).fit(build("adam_regression").module, run.train)
    # Reviews: the floor's 10 (the run's end included) against every 100 batches plus the run's end.
    assert fewer._budget is not None and (guard._budget.reports, fewer._budget.reports) == (10, 5)


def test_a_run_within_budget_prints_its_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = build("adam_regression")
    guard = LossGuard(budget=1.0)
    t = trainer(tmp_path, [guard], max_steps=120)
    t.fit(run.module, run.train)
    assert not any(n.startswith("LossGuard's own time") for n in guard.notes)
    out = " ".join(capsys.readouterr().out.split())
    assert "cost: " in out and "of the training step time (budget 100%;" in out
