"""The cost budget: what it adapts, in which order, within which limits; and in real fits, that a strided run
still sees a NaN on its step, measures gradients on optimizer steps under accumulation, and reports its cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from lightning_lossguard.signals.budget import CostBudget
from lightning_lossguard.signals.recorder import SignalRecorder
from tests.conftest import events, trainer

OVER, UNDER = 1.0, 0.0  # seconds of LossGuard's own time over 100 batches of 10 ms: 100% and 0%


def test_over_budget_first_strides_the_gradients_then_reports_less_often() -> None:
    budget = CostBudget(
        0.01, report_batches=80, warmup_reviews=0
    )  # at least 10 gradient rows per report: stride up to 8
    strides, intervals = [], []
    for _ in range(8):
        budget.review(100, OVER, 10.0)
        strides.append(budget.stride)
        intervals.append(budget.report_batches)
    # A longer interval holds more steps: the stride follows it, keeping 10 gradient rows per report.
    assert strides == [2, 4, 8, 8, 16, 16, 32, 32]
    assert intervals == [80, 80, 80, 160, 160, 320, 320, 640]
    for _ in range(4):
        budget.review(100, OVER, 10.0)
    assert (budget.stride, budget.report_batches) == (64, 640)  # at most max_report_factor (8) x the default
    assert budget.share == pytest.approx(1.0) and budget.own_us == pytest.approx(10_000)


def test_well_under_budget_goes_back_in_reverse_order() -> None:
    budget = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    for _ in range(6):
        budget.review(100, OVER, 10.0)
    assert (budget.stride, budget.report_batches) == (16, 320)
    steps = []
    for _ in range(6):
        budget.review(100, UNDER, 10.0)
        steps.append((budget.stride, budget.report_batches))
    assert steps == [(16, 160), (16, 80), (8, 80), (4, 80), (2, 80), (1, 80)]


def test_a_short_run_keeps_its_reports_however_far_over_budget() -> None:
    # 400 planned batches, 10 reports at least: the interval grows from 20 to 40 batches at most.
    budget = CostBudget(0.01, report_batches=20, max_report_batches=400 // 10, warmup_reviews=0)
    for _ in range(6):
        budget.review(100, OVER, 10.0)
    assert (budget.stride, budget.report_batches) == (4, 40)
    longer = CostBudget(
        0.01, report_batches=50, max_report_batches=1500 // 10, warmup_reviews=0
    )  # 1,500 batches: up to 150
    intervals = []
    for _ in range(12):
        longer.review(100, OVER, 10.0)
        intervals.append(longer.report_batches)
    assert intervals[-1] == 150 and sorted(set(intervals)) == [50, 100, 150]
    for _ in range(2):
        longer.review(100, UNDER, 10.0)
    assert longer.report_batches == 50  # back down, never below the configured interval


def test_the_first_reviews_measure_but_do_not_adapt() -> None:
    # The first interval pays the run's set-up and the second the first report's layout: not the steady state.
    budget = CostBudget(0.01, report_batches=80)
    budget.review(100, OVER, 10.0)
    budget.review(100, OVER, 10.0)
    assert budget.stride == 1 and budget.share == pytest.approx(1.0)
    budget.review(100, OVER, 10.0)
    assert budget.stride == 2


def test_between_a_quarter_of_the_budget_and_the_budget_nothing_moves() -> None:
    budget = CostBudget(0.01, report_batches=80, stride=4)
    budget.review(100, 0.005, 10.0)  # 0.5%
    assert (budget.stride, budget.report_batches) == (4, 80)


def test_a_user_set_report_interval_is_never_changed() -> None:
    budget = CostBudget(0.01, report_batches=40, adaptive_reports=False, warmup_reviews=0)
    for _ in range(6):
        budget.review(100, OVER, 10.0)
    assert (budget.stride, budget.report_batches) == (4, 40)


def test_under_accumulation_the_stride_limit_counts_optimizer_steps() -> None:
    budget = CostBudget(
        0.01, report_batches=160, accumulate=4, adaptive_reports=False, warmup_reviews=0
    )  # 40 optimizer steps
    for _ in range(4):
        budget.review(100, OVER, 10.0)
    assert budget.stride == 4  # 40 steps / 10 rows at least


def test_without_adaptation_the_share_is_still_measured() -> None:
    budget = CostBudget(0.01, report_batches=80, adapt=False, warmup_reviews=0)
    budget.review(100, OVER, 10.0)
    assert budget.stride == 1 and budget.report_batches == 80 and budget.state()["share"] == pytest.approx(1.0)


def test_no_step_time_no_decision() -> None:
    budget = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    budget.review(100, OVER, float("nan"))
    budget.review(0, OVER, 10.0)
    assert budget.stride == 1 and budget.state()["share"] != budget.state()["share"]  # NaN: never measured


def test_samples_every_strideth_and_always_the_batch_before_a_report() -> None:
    budget = CostBudget(0.01, report_batches=20, stride=4)
    assert [i for i in range(20) if budget.samples(i, before_report=(i + 1) % 20 == 0)] == [0, 4, 8, 12, 16, 19]
    assert all(CostBudget(0.01, report_batches=20).samples(i, False) for i in range(20))


# -- in real fits ----------------------------------------------------------------------------------------------


def test_a_strided_run_sees_the_nan_on_its_step_and_reports_its_cost(tmp_path: Path) -> None:
    run = build("nan_in_batch")
    # A budget no run can meet: the stride and the report interval go to their limits.
    guard = LossGuard(budget=1e-6, verbose=False)
    # 800 steps: reports may stretch to 800 / MIN_REPORTS_UNDER_BUDGET = 80 batches (8x the default 10).
    t = trainer(tmp_path, [guard], **{**run.trainer, "max_steps": 800})
    t.fit(run.module, run.train)
    report = json.loads((Path(t.log_dir) / "lossguard.json").read_text())  # type: ignore[arg-type]
    [nan] = [d for d in report["diagnoses"] if d["code"] == "nonfinite_loss"]
    assert "became NaN at step 60" in nan["message"]  # the loss is recorded on every step whatever the stride
    # and reported within one default interval (10 batches here), though reports came every 80 by then.
    assert nan["step"] == 69
    cost = report["cost"]
    assert cost["budget"] == 1e-6 and cost["share"] > 1e-6 and cost["gradient_stride"] > 1
    assert cost["report_every_batches"] > guard._budget.base_report_batches  # type: ignore[union-attr]
    assert cost["report_every_batches"] == 80  # but never so rarely that the run gets fewer than 10 reports
    assert guard._diagnostician.steps_judged < 400  # gradient rows on the stride only
    acc = events(t.logger.log_dir)  # type: ignore[union-attr]
    strides = [e.value for e in acc.Scalars("lossguard/cost/gradient_stride")]
    assert strides[0] == 1 and strides[-1] == cost["gradient_stride"]
    assert all(e.value > 0 for e in acc.Scalars("lossguard/cost/share"))


def test_under_accumulation_gradients_are_measured_on_strided_optimizer_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = build("adam_regression")
    measured: list[int] = []
    original = SignalRecorder.record_gradients

    def spy(self: SignalRecorder, step: int, optimizer: torch.optim.Optimizer) -> None:
        measured.append(step)
        original(self, step, optimizer)

    monkeypatch.setattr(SignalRecorder, "record_gradients", spy)
    guard = LossGuard(budget=1e-6, report_every=20, verbose=False)  # 20 optimizer steps = 60 batches per report
    trainer(tmp_path, [guard], max_steps=80, accumulate_grad_batches=3).fit(run.module, run.train)
    # Every step until the third report (the first two reviews are warm-up); then every 2nd (20 steps / 10 rows at
    # least) -- optimizer steps, one row each, never micro-batches -- plus the step that comes last before a report.
    assert len(measured) == len(set(measured)) and measured == sorted(measured)
    assert set(range(60)) | set(range(60, 80, 2)) <= set(measured)
    assert len(measured) < 60 + 10 + 2


def test_a_full_budget_measures_every_step(tmp_path: Path) -> None:
    run = build("adam_regression")
    guard = LossGuard(budget=1.0, verbose=False)
    trainer(tmp_path, [guard], max_steps=120).fit(run.module, run.train)
    assert guard._diagnostician.steps_judged == 120
    assert guard._budget is not None and guard._budget.stride == 1
