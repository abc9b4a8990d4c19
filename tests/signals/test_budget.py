"""The cost budget: what it adapts, in which order, within which limits; and in real fits, that a strided run
still sees a NaN on its step, measures gradients on optimizer steps under accumulation, and reports its cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from lightning_lossguard.signals.budget import CostBudget, IntervalCost
from lightning_lossguard.signals.recorder import SignalRecorder
from tests.conftest import events, trainer

STEP_MS = 10.0  # every interval below: 100 batches of 10 ms; a 1% budget is 100 µs per batch


def spent(fixed_us: float = 20.0, sample_us: float = 0.0, rows: int = 100, report_ms: float = 0.0) -> IntervalCost:
    """An interval of 100 batches: ``fixed_us`` per batch, ``rows`` gradient passes of ``sample_us``, one report."""
    gradient_s = sample_us * rows / 1e6
    own = fixed_us * 100 / 1e6 + gradient_s + report_ms / 1e3
    return IntervalCost(100, own, STEP_MS, gradient_s, rows, report_ms / 1e3)


def test_over_budget_it_plans_the_shortest_interval_then_the_smallest_stride_that_fit() -> None:
    budget = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    # Aiming at 80% of 100 µs: 20 fixed + 500 / stride + 5,000 / interval. At 80 batches the report alone is
    # 62.5 µs (no stride fits); at 160 a stride of 18 would, but 160 batches hold 16 rows at most; 240 with 13 fits.
    budget.review(spent(sample_us=500, report_ms=5))
    assert (budget.report_batches, budget.stride) == (240, 13)
    assert budget.share == pytest.approx((20 + 500 + 50) / 1e4)
    assert budget.own_us == pytest.approx(570)


def test_the_gradient_stride_comes_before_the_report_interval() -> None:
    budget = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    budget.review(spent(sample_us=300, report_ms=1))  # 20 + 300 / s + 12.5 <= 80: a stride of 7 is enough
    assert (budget.report_batches, budget.stride) == (80, 7)


def test_when_nothing_fits_everything_goes_to_its_limit() -> None:
    budget = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    budget.review(spent(fixed_us=150, sample_us=500, report_ms=5))  # the hooks alone are over budget
    assert (budget.report_batches, budget.stride) == (640, 64)  # 8x the default; 10 rows per report


def test_well_under_budget_it_goes_back() -> None:
    budget = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    budget.review(spent(sample_us=500, report_ms=5))
    assert (budget.report_batches, budget.stride) == (240, 13)
    budget.review(spent(fixed_us=5, sample_us=20, rows=8, report_ms=1))  # the model got slower per step, say
    assert (budget.report_batches, budget.stride) == (80, 1)


def test_between_half_the_budget_and_the_budget_nothing_moves() -> None:
    budget = CostBudget(0.01, report_batches=80, stride=4, warmup_reviews=0)
    budget.review(spent(fixed_us=30, sample_us=100, rows=25, report_ms=1))  # 0.65%: a stride of 2 would fit too
    assert (budget.report_batches, budget.stride) == (80, 4)
    budget.review(spent(fixed_us=20, sample_us=100, rows=25, report_ms=1))  # 0.55%: still above half
    assert (budget.report_batches, budget.stride) == (80, 4)


def test_a_short_run_keeps_its_reports_however_far_over_budget() -> None:
    # 400 planned batches, 10 reports at least: the interval grows from 20 to 40 batches at most.
    budget = CostBudget(0.01, report_batches=20, max_report_batches=400 // 10, warmup_reviews=0)
    budget.review(spent(fixed_us=150, sample_us=500, report_ms=5))
    assert (budget.stride, budget.report_batches) == (4, 40)
    # A configured interval longer than a tenth of the run is kept, not shortened.
    assert CostBudget(0.01, report_batches=50, max_report_batches=30)._report_cap() == 50


def test_the_first_reviews_measure_but_do_not_adapt() -> None:
    # The first interval pays the run's set-up and the second the first report's layout: not the steady state.
    budget = CostBudget(0.01, report_batches=80)
    budget.review(spent(sample_us=500, report_ms=5))
    budget.review(spent(sample_us=500, report_ms=5))
    assert budget.stride == 1 and budget.share == pytest.approx(0.057)
    budget.review(spent(sample_us=500, report_ms=5))
    assert (budget.report_batches, budget.stride) == (240, 13)


def test_a_user_set_report_interval_is_never_changed() -> None:
    budget = CostBudget(0.01, report_batches=40, adaptive_reports=False, warmup_reviews=0)
    budget.review(spent(fixed_us=150, sample_us=500, report_ms=5))
    assert (budget.stride, budget.report_batches) == (4, 40)


def test_under_accumulation_the_stride_counts_optimizer_steps() -> None:
    budget = CostBudget(
        0.01, report_batches=160, accumulate=4, adaptive_reports=False, warmup_reviews=0
    )  # 40 optimizer steps
    budget.review(spent(fixed_us=150, sample_us=500, rows=25, report_ms=5))
    assert budget.stride == 4  # 40 steps / 10 rows at least
    relaxed = CostBudget(0.01, report_batches=160, accumulate=4, warmup_reviews=0)
    relaxed.review(spent(fixed_us=20, sample_us=800, rows=25, report_ms=1))
    # one pass per 4 batches: 800 / (4 s) <= 80 - 20 - 6.25 gives s = 4, the most 40 optimizer steps allow
    assert (relaxed.report_batches, relaxed.stride) == (160, 4)


def test_without_adaptation_the_share_is_still_measured() -> None:
    budget = CostBudget(0.01, report_batches=80, adapt=False, warmup_reviews=0)
    budget.review(spent(sample_us=500, report_ms=5))
    assert budget.stride == 1 and budget.report_batches == 80 and budget.state()["share"] == pytest.approx(0.057)


def test_no_step_time_no_decision() -> None:
    budget = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    budget.review(IntervalCost(100, 1.0, float("nan")))
    budget.review(IntervalCost(0, 1.0, 10.0))
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
