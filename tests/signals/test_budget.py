"""The cost budget: what it adapts, in which order, within which limits; and in real fits, that a strided run
still sees a NaN on its step, measures gradients on optimizer steps under accumulation, and reports its cost."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from lightning_lossguard.signals.budget import CostBudget, CostMeter, IntervalCost
from lightning_lossguard.signals.recorder import SignalRecorder
from tests.conftest import events, reports_of, trainer

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


def test_a_sampled_monitor_s_batches_are_planned_on_the_stride_with_the_gradient_passes() -> None:
    """An OutputMonitor's work comes on the stride's batches: 300 µs on each of 100 batches is not a fixed cost per
    batch (no plan could fit then) but what the stride divides, as a gradient pass of 300 µs is."""
    budget = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    monitored = spent(report_ms=1)
    budget.review(IntervalCost(100, monitored.own_seconds + 0.03, STEP_MS, 0.0, 0, 1e-3, 0.03, 100))
    assert budget.fixed_us == pytest.approx(20)
    assert (budget.report_batches, budget.stride) == (80, 7)  # 20 + 300 / 7 + 12.5 <= 80, as for the gradients
    assert budget.limited_by == ""


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
    # 400 planned batches, 10 reports at least. After the first 20 batches (one report), 9 are owed over the 380
    # batches left, the one at the run's end included: the interval grows from 20 to 43 batches at most (8 more in
    # the loop, at 63 ... 364, and the end 36 batches later; 42 would add one 16 batches before the end).
    budget = CostBudget(0.01, report_batches=20, min_reports=10, planned_batches=400, warmup_reviews=0)
    budget.review(IntervalCost(20, 20 * 150e-6 + 20 * 500e-6 + 5e-3, STEP_MS, 20 * 500e-6, 20, 5e-3))
    assert (budget.stride, budget.report_batches) == (4, 43)
    # When the batches left divide evenly, the interval is one batch longer: 9 owed over 180 would put the ninth at
    # 20 + 9 x 20 = 200, the last batch, where the run's end writes its own report (the same report twice).
    even = CostBudget(0.01, report_batches=20, min_reports=10, planned_batches=200, warmup_reviews=0)
    even.review(IntervalCost(20, 20 * 150e-6 + 20 * 500e-6 + 5e-3, STEP_MS, 20 * 500e-6, 20, 5e-3))
    assert even.report_batches == 21  # in the loop at 41 ... 188, the end 12 batches later
    # The warm-up's reports count: after 3 reports at 50 batches, 7 are owed over the 1,350 left (193 batches each).
    warmed = CostBudget(0.01, report_batches=50, min_reports=10, planned_batches=1500)
    for _ in range(3):
        warmed.review(IntervalCost(50, 50 * 2000e-6, STEP_MS))
    assert warmed.report_batches == 193
    # Under gradient accumulation the interval is a whole number of optimizer steps (reports end a window).
    accumulating = CostBudget(0.01, report_batches=60, min_reports=10, planned_batches=1500, accumulate=3)
    for _ in range(3):
        accumulating.review(IntervalCost(60, 60 * 2000e-6, STEP_MS))
    assert accumulating.report_batches == 189  # 1,320 / 7 = 188.6, up to 189 = 63 steps
    # Fixed from then on: extra reports (at each validation end, say) do not use up what is owed.
    for _ in range(12):
        warmed.review(IntervalCost(20, 20 * 2000e-6, STEP_MS))
    assert warmed.report_batches == 193
    # A configured interval longer than the run allows is kept, not shortened.
    assert CostBudget(0.01, report_batches=50, min_reports=10, planned_batches=300)._report_cap() == 50


def test_a_replanned_run_spreads_the_reports_still_owed_over_what_is_left() -> None:
    # Planned at 400 batches, the first review fixes the floor at 43 (above). Then the run turns out to be 1,200
    # batches long (a loader reloaded with more batches): the 9 reports owed now spread over the 1,180 left.
    budget = CostBudget(0.01, report_batches=20, min_reports=10, planned_batches=400, warmup_reviews=0)
    over = IntervalCost(20, 20 * 150e-6 + 20 * 500e-6 + 5e-3, STEP_MS, 20 * 500e-6, 20, 5e-3)
    budget.review(over)
    assert budget.report_batches == 43
    budget.replan(400)  # the same length: the floor stays
    assert budget.floor_batches == 43
    budget.replan(1200)
    budget.review(IntervalCost(43, 43 * 2000e-6, STEP_MS))  # 63 batches seen, 2 reports: 8 owed over 1,137
    assert budget.report_batches == 143 and budget.state()["planned_steps"] == 1200


def test_a_new_accumulation_keeps_the_intervals_optimizer_steps() -> None:
    # 8 batches a step, then 1 (a GradientAccumulationScheduler): 10 steps were 80 batches and are now 10; a
    # stretched interval of 20 steps stays 20 steps, and stays stretched.
    budget = CostBudget(0.01, report_batches=80, accumulate=8, min_reports=10, planned_batches=400)
    budget.report_batches, budget.floor_batches = 160, 160
    budget.change_accumulation(1)
    assert (budget.base_report_batches, budget.report_batches, budget.accumulate) == (10, 20, 1)
    assert budget.stretched and budget.floor_batches == 0  # the floor is counted again at the next plan


def test_the_first_reviews_only_take_the_stride_every_plan_would_reach() -> None:
    # The first interval pays the run's set-up and the second the first report's layout: not the steady state, so
    # no plan yet. But a 500 µs gradient pass per step cannot fit an 80 µs aim whatever else costs: stride 7 now.
    budget = CostBudget(0.01, report_batches=80)
    budget.review(spent(fixed_us=900, sample_us=500, report_ms=5))
    assert (budget.report_batches, budget.stride) == (80, 7)
    budget.review(spent(sample_us=500, report_ms=5))
    assert (budget.report_batches, budget.stride) == (80, 7) and budget.share == pytest.approx(0.057)
    budget.review(spent(sample_us=500, report_ms=5))
    assert (budget.report_batches, budget.stride) == (240, 13)


def test_during_the_first_reviews_a_cheap_gradient_pass_keeps_every_step_however_costly_the_set_up() -> None:
    budget = CostBudget(0.01, report_batches=80)
    budget.review(spent(fixed_us=5000, sample_us=60, report_ms=50))
    assert (budget.report_batches, budget.stride) == (80, 1)


def test_the_first_reviews_stride_keeps_the_rows_a_report_needs() -> None:
    budget = CostBudget(0.01, report_batches=50)
    budget.review(spent(sample_us=100_000))
    assert budget.stride == 5  # 50 batches / 10 rows


def test_a_run_of_known_length_pays_back_what_its_start_spent_over_budget() -> None:
    # Both runs measure a costly start (300 µs per batch: set-up) and then twice the same interval: 40 µs fixed per
    # batch, a 200 µs gradient pass on every step, a 1 ms report. Unknown length: the third review plans for 80%
    # of the 100 µs budget: 40 + 10 + 200 / 7 <= 80. 2,000 planned batches: the 50 ms spent over budget so far are
    # spread over the 1,700 batches left (29.4 µs each), so the plan aims at 80% of 70.6 µs: at 100 batches a
    # stride of 31 would be needed (10 rows at most), at 200 batches 40 + 5 + 200 / 18 fits.
    plans = []
    for planned in (0, 2000):
        budget = CostBudget(0.01, report_batches=100, planned_batches=planned)
        budget.review(spent(fixed_us=300))
        budget.review(spent(fixed_us=40, sample_us=200, report_ms=1))
        budget.review(spent(fixed_us=40, sample_us=200, report_ms=1))
        plans.append((budget.report_batches, budget.stride))
    assert plans == [(100, 7), (200, 18)]
    assert budget.spent_own_us == pytest.approx(300 * 100 + 2 * (40 * 100 + 200 * 100 + 1000))


def test_over_budget_with_nothing_left_to_pay_with_the_warm_up_takes_the_most_stride() -> None:
    budget = CostBudget(0.01, report_batches=50, planned_batches=150)
    budget.review(spent(fixed_us=5000, sample_us=30))
    assert budget.stride == 5


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
    marks = [budget.samples(i, i // 3, before_report=(i + 1) % 20 == 0) for i in range(20)]
    assert [i for i, (timed, _) in enumerate(marks) if timed] == [0, 4, 8, 12, 16, 19]
    assert [i for i, (_, measured) in enumerate(marks) if measured] == [0, 1, 2, 12, 13, 14, 19]  # steps 0, 4, 6
    assert all(CostBudget(0.01, report_batches=20).samples(i, i, False) == (True, True) for i in range(20))


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
    # Every step until the first report; then every 2nd (20 steps / 10 rows at least: a gradient pass alone is over
    # this budget, so the warm-up reviews take that stride too) -- optimizer steps, one row each, never
    # micro-batches -- plus the step that comes last before a report.
    assert len(measured) == len(set(measured)) and measured == sorted(measured)
    assert set(range(20)) | set(range(20, 80, 2)) <= set(measured)
    assert len(measured) < 20 + 30 + 4


def test_without_a_budget_every_step_is_measured_and_the_report_says_so(tmp_path: Path) -> None:
    run = build("adam_regression")
    # The same run under a tiny budget strides: what budget=None must not do.
    strided = LossGuard(budget=1e-6, report_every=40, verbose=False)
    trainer(tmp_path / "strided", [strided], max_steps=200).fit(run.module, run.train)
    assert strided._budget is not None and strided._budget.stride > 1
    guard = LossGuard(budget=None, report_every=40, verbose=False)
    trainer(tmp_path / "off", [guard], max_steps=200).fit(build("adam_regression").module, run.train)
    assert guard._diagnostician.steps_judged == 200
    [path] = (tmp_path / "off").rglob("lossguard.json")
    cost = json.loads(path.read_text())["cost"]
    assert (cost["budget"], cost["gradient_stride"], cost["report_every_batches"]) == ("inf", 1, 40)


def test_a_stretched_interval_counts_from_the_report_that_stretched_it(tmp_path: Path) -> None:
    run = build("adam_regression")
    guard = LossGuard(budget=1e-6, verbose=False)  # over budget from the start: the interval goes to its limit
    reported = reports_of(guard)
    trainer(tmp_path, [guard], max_steps=400, log_every_n_steps=50).fit(run.module, run.train)
    # 20 batches a report by default (400 / 20), stretched after the warm-up (reports at 20, 40, 60) so that the 10
    # reports the run keeps include the one at its end: 340 batches / 7 = 49 each, counted from batch 60 (on the old
    # grid of multiples the first would have come at 98, and the last 8 batches before the end).
    assert reported == [20, 40, 60, 109, 158, 207, 256, 305, 354, 400]


def test_the_meter_hands_over_an_interval_and_starts_again() -> None:
    meter = CostMeter()
    meter.own_seconds += 0.03
    meter.gradient_seconds += 0.01
    meter.interval_seconds += 0.005
    meter.monitor_seconds += 0.002
    meter.monitor_batches += 4
    cost = meter.take(batches=20, step_ms=2.0, gradient_rows=7)
    assert cost == IntervalCost(20, 0.03, 2.0, 0.01, 7, 0.005, 0.002, 4)
    assert meter.take(batches=20, step_ms=2.0, gradient_rows=0) == IntervalCost(20, 0.0, 2.0, 0.0, 0, 0.0, 0.0, 0)


def test_it_says_which_limit_kept_a_plan_over_budget_and_keeps_the_run_s_totals() -> None:
    fits = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    fits.review(spent(sample_us=300, report_ms=1))
    assert fits.limited_by == ""
    # 400 planned batches, 10 reports at least: the interval cannot grow past 43 batches, and no stride fits there.
    short = CostBudget(0.01, report_batches=20, min_reports=10, planned_batches=400, warmup_reviews=0)
    short.review(spent(sample_us=500, report_ms=5))
    assert short.limited_by == "min_reports"
    capped = CostBudget(0.01, report_batches=80, warmup_reviews=0)
    capped.review(spent(sample_us=500, report_ms=50))
    assert capped.limited_by == "max_report_factor" and capped.report_batches == 640
    fixed = CostBudget(0.01, report_batches=80, adaptive_reports=False, warmup_reviews=0)
    fixed.review(spent(sample_us=500, report_ms=50))
    assert fixed.limited_by == "report_every" and fixed.report_batches == 80
    warming = CostBudget(0.01, report_batches=80)
    warming.review(spent(sample_us=500, report_ms=5))
    assert warming.limited_by == "warm_up"
    ranks = CostBudget(0.01, report_batches=80, adapt=False)
    ranks.review(spent(sample_us=500, report_ms=5))
    assert ranks.limited_by == "ranks"
    off = CostBudget(math.inf, report_batches=80)  # LossGuard(budget=None): never adapts
    off.review(spent(sample_us=500, report_ms=50))
    assert off.limited_by == "off" and (off.stride, off.report_batches) == (1, 80)
    # Totals over the run: 2 intervals of 100 batches of 10 ms, each 20 µs a batch, 100 passes of 500 µs, a 5 ms report.
    ranks.review(spent(sample_us=500, report_ms=5))
    assert ranks.spent_own_us == pytest.approx(2 * (2_000 + 50_000 + 5_000))
    assert (ranks.spent_gradient_us, ranks.spent_report_us) == (pytest.approx(100_000), pytest.approx(10_000))
    assert ranks.gradient_rows == 200 and ranks.seen_batches == 200
    assert ranks.run_share == pytest.approx(114_000 / 2_000_000)
    assert ranks.state()["run_share"] == ranks.run_share and ranks.state()["own_seconds"] == pytest.approx(0.114)
    assert math.isnan(CostBudget(0.01, report_batches=80).run_share)
