"""What the diagnostician keeps once a run is broken: the facts, not the detectors' second thoughts about it."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest

from lightning_lossguard.catalog import LOSS_FELL, cause_first
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.diagnostician import Diagnostician, RunLayout
from lightning_lossguard.signals.gradients import NO_GRADIENT
from lightning_lossguard.signals.step_timer import PHASES
from lightning_lossguard.signals.window import Window


def found(code: str, severity: Severity, step: int) -> Diagnosis:
    return Diagnosis(code, severity, step, f"{code} at {step}")


def test_after_a_blow_up_a_hesitant_divergence_is_a_consequence_not_a_card() -> None:
    judge = Diagnostician()
    judge.accept([found("exploding_gradients", Severity.ERROR, 109)])
    # The loss's block medians lag the blow-up: "rose only 7x, maybe a moving target" is not news after it.
    assert judge.accept([found("loss_divergence", Severity.INFO, 119)]) == []
    assert "loss_divergence" in judge.consequences
    # A non-finite loss after the break is a fact and still reported.
    assert [d.code for d in judge.accept([found("nonfinite_loss", Severity.ERROR, 129)])] == ["nonfinite_loss"]
    judge.accept([found("vanishing_gradients", Severity.WARNING, 129)])
    [note] = judge.unjudged(RunLayout())
    assert note.endswith("not reported separately: loss_divergence, vanishing_gradients.")
    # Once the divergence is itself an error it is reported, and the note no longer says it is not.
    assert [d.code for d in judge.accept([found("loss_divergence", Severity.ERROR, 139)])] == ["loss_divergence"]
    [note] = judge.unjudged(RunLayout())
    assert note.endswith("not reported separately: vanishing_gradients.")


def test_a_loss_that_fell_towards_minus_inf_comes_before_the_gradients_it_blew_up() -> None:
    # A negated loss runs to -8.8e13 and NaN: its gradients explode in the same report. The sign is the cause; a user
    # reading the first alarm alone would otherwise clip gradients.
    blown = found("exploding_gradients", Severity.ERROR, 19)
    fell = Diagnosis("nonfinite_loss", Severity.ERROR, 19, "fell towards -inf", {LOSS_FELL: 1.0})
    nan = found("nonfinite_loss", Severity.ERROR, 19)  # a NaN after a positive blow-up: still the symptom
    assert [d.evidence for d in Diagnostician().accept([blown, fell])] == [fell.evidence, {}]
    assert [d.code for d in Diagnostician().accept([nan, blown])] == ["exploding_gradients", "nonfinite_loss"]
    assert cause_first([blown, fell]) == [fell, blown] and cause_first([nan, blown]) == [blown, nan]


def test_before_any_break_the_same_info_is_reported() -> None:
    judge = Diagnostician()
    assert [d.code for d in judge.accept([found("loss_divergence", Severity.INFO, 119)])] == ["loss_divergence"]
    assert judge.consequences == set()


# -- any curve, cut at any report boundary: judging never raises ------------------------------------------------
# Where a report falls depends on the cost budget, so on the host's speed: a detector must be correct for every
# cut of the same run. These curves hold the shapes real runs have (and one that once raised StopIteration: a
# climb whose latest block is a new best), with non-finite values, zeros and extreme magnitudes mixed in.

STEPS = 300


def _curves(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(STEPS, dtype=np.float64)
    noise = 10 ** (0.3 * rng.standard_normal(STEPS))
    # Doubling every 10-step block, then one block below everything: the run's last report sees a new best.
    climb_then_best = np.concatenate([np.ones(190), np.repeat(2.0 ** np.arange(1, 11), 10), np.full(10, 1e-4)])
    spiky = np.where(rng.random(STEPS) < 0.03, 1e4, 1.0) * noise
    with_nan = 2.0 * np.exp(-t / 80) * noise
    with_nan[rng.integers(0, STEPS, 5)] = np.nan
    with_nan[rng.integers(0, STEPS, 2)] = np.inf
    return {
        "decaying": 2.0 * np.exp(-t / 80) * noise + 0.1,
        "rising": np.geomspace(0.5, 5e3, STEPS) * noise,
        "climb_then_best": climb_then_best,
        "spiky": spiky,
        "flat": np.full(STEPS, 0.7),
        "zeros": np.zeros(STEPS),
        "negative_falling": -np.geomspace(1, 1e6, STEPS),
        "signed_noise": rng.standard_normal(STEPS),
        "oscillating": 3.0 * 10 ** (0.5 * np.sin(2 * np.pi * t / 14)),
        "step_change": np.where(t < 150, 0.01, 100.0) * noise,
        "tiny": 1e-30 * noise,
        "huge": 1e30 * noise,
        "non_finite": with_nan,
    }


def _windows(rng: np.random.Generator, loss: np.ndarray, params: int) -> list[Window]:
    cuts = [0]
    while cuts[-1] < STEPS:
        cuts.append(min(STEPS, cuts[-1] + int(rng.integers(1, 61))))
    grads = np.abs(loss[:, None]) * 10 ** (0.2 * rng.standard_normal((STEPS, params)))
    grads[:, -1] = NO_GRADIENT  # a parameter that never gets a gradient
    grads[rng.random(grads.shape) < 0.01] = 0.0
    windows = []
    for a, b in itertools.pairwise(cuts):
        steps = list(range(a, b))
        sampled = rng.random() < 0.5
        windows.append(
            Window(
                optimizer_steps=steps,
                param_norms=grads[a:b],
                batch_steps=steps,
                loss=loss[a:b],
                learning_rate=np.full(b - a, 1e-3) * (1 + (np.arange(a, b) % 50 == 0)),
                timing_steps=steps,
                phase_ms={p: np.abs(rng.normal(1.0 + a / 100, 0.2, b - a)) for p in PHASES},
                dead_unit_share=rng.choice([0.0, 0.5, 1.0, NO_GRADIENT], params) if sampled else None,
                update_ratio=np.abs(rng.normal(1e-3, 1e-3, params)) if sampled else None,
                sample_step=b - 1 if sampled else None,
                host_rss_mb=500.0 + b,
            )
        )
    return windows


@pytest.mark.parametrize("seed", range(3))
def test_every_curve_at_every_cut_is_judged_without_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layout = RunLayout(
        param_names=("a.weight", "a.bias", "b.weight", "b.bias", "c.weight", "c.bias"),
        param_sizes=(4096, 64, 4096, 64, 640, 10),
        param_units=(64, 0, 64, 0, 10, 0),
        layer_of=(0, 0, 1, 1, 2, 2),
        layers=("a", "b", "c"),
        comparable=(True, True, True),
        layer_group=(0, 0, 0),
        total_steps=STEPS,
        model_elements=8970,
    )
    for name, loss in _curves(rng).items():
        judge = Diagnostician()
        found: list[Diagnosis] = []
        for window in _windows(rng, loss, len(layout.param_names)):
            found += judge.judge(window, layout, 1e-3)
            if window.batch_steps[-1] % 50 < len(window.batch_steps):
                val = float(np.nanmedian(np.abs(window.loss))) if np.isfinite(window.loss).any() else math.nan
                found += judge.judge_validation(window.batch_steps[-1], 0, {"val_loss": val})
        for d in found:
            assert isinstance(d.step, int) and 0 <= d.step < STEPS, (name, d)
            json.dumps(d.evidence, default=float)  # evidence stays plain numbers


def test_a_validation_judged_with_the_pending_losses_reads_as_one_judged_after_a_report() -> None:
    """Between reports a validation is compared with the losses recorded since the last one: the verdicts are
    those of a report made just before it."""
    rng = np.random.default_rng(0)
    layout = RunLayout(total_steps=400)
    train = np.exp(-np.arange(400) / 100) + 0.05 * rng.standard_normal(400)  # falls all run long
    val = [1.0, 0.8, 0.7, 0.65, 0.7, 0.8, 0.95, 1.1]  # a low start, then a rise: overfitting
    reported, pending = Diagnostician(), Diagnostician()
    for epoch, (start, end) in enumerate(itertools.pairwise(range(0, 450, 50))):
        steps = list(range(start, end))
        window = Window(optimizer_steps=[], batch_steps=steps, loss=train[start:end])
        found = reported.judge(window, layout) + reported.judge_validation(end, epoch, {"val_loss": val[epoch]})
        half = (start + end) // 2  # the pending judge's report came halfway through the epoch
        first = Window(optimizer_steps=[], batch_steps=steps[: half - start], loss=train[start:half])
        second = train[half:end].tolist()
        late = pending.judge(first, layout) + pending.judge_validation(end, epoch, {"val_loss": val[epoch]}, second)
        assert [d.code for d in found if d.code == "val_loss_rising"] == [
            d.code for d in late if d.code == "val_loss_rising"
        ]
        pending.judge(Window(optimizer_steps=[], batch_steps=steps[half - start :], loss=train[half:end]), layout)
    assert any(d.code == "val_loss_rising" for d in reported.diagnoses)
    ours = [d for d in pending.diagnoses if d.code == "val_loss_rising"]
    theirs = [d for d in reported.diagnoses if d.code == "val_loss_rising"]
    assert [(d.step, d.evidence) for d in ours] == [(d.step, d.evidence) for d in theirs]


def test_one_spelling_of_the_validation_loss_is_watched_per_run() -> None:
    judge = Diagnostician()
    logged = {"train_loss": 1.0, "val/loss": 2.0, "val_loss/dataloader_idx_1": 3.0, "val_loss": 4.0, "val_acc": 0.5}
    assert judge.watched_metrics(logged) == {"val/loss": 2.0}  # the first spelling logged
    judge.judge_validation(10, 0, {"val_loss": 4.0, "val_loss/dataloader_idx_1": 3.0})
    assert judge.watched_metrics(logged) == {"val_loss/dataloader_idx_1": 3.0, "val_loss": 4.0}  # the one judged
    assert judge.watched_metrics({"val_acc": 0.5}) == {}
    assert Diagnostician(val_metric="val_acc").watched_metrics(logged) == {"val_acc": 0.5}


def test_an_early_stoppers_metric_the_validation_detector_does_not_watch_is_kept_through_a_resume() -> None:
    judge = Diagnostician()
    judge.judge_validation(10, 0, {"val_loss": 2.0})
    judge.record_stopper_metrics({"val_loss": 2.0, "val_acc": 0.5})
    judge.record_stopper_metrics({"val_loss": 2.1, "val_acc": 0.48})
    assert judge.stopper_values == {"val_acc": [0.5, 0.48]}  # the judged loss is val_loss_rising's own
    resumed = Diagnostician()
    resumed.load_state_dict(json.loads(json.dumps(judge.state_dict())))
    assert resumed.stopper_values == {"val_acc": [0.5, 0.48]}
    resumed.fit_restarted(20)  # a later fit without a checkpoint: new validation data, the numbers start over
    assert resumed.stopper_values == {}


# -- host memory: what the allocator keeps free is not growth ---------------------------------------------------
# A corpus worker's S4D fit (healthy): RSS 696 -> 770 MiB over 346 steps, rising at 73% of its reports, was called
# a leak. Its malloc free memory rose with it (re-measured on this pattern: RSS 554 -> 635, free 134 -> 214).
RSS_STEPS = [12, *np.linspace(37, 383, 15).astype(int).tolist()]  # the first report's sample is not judged
RSS = np.array([690.0, *(np.linspace(696.0, 770.0, 15) + np.where(np.arange(15) % 4 == 3, -3.0, 0.0))])


def judge_memory(free: np.ndarray | None) -> list[str]:
    """The memory diagnoses' subjects (what was judged), one report per RSS sample."""
    judge, subjects = Diagnostician(), []
    for i, step in enumerate(RSS_STEPS):
        steps = list(range(step - 11, step + 1))
        window = Window(
            batch_steps=steps,
            loss=np.full(len(steps), 0.5),
            host_rss_mb=float(RSS[i]),
            allocator_free_mb=None if free is None else float(free[i]),
        )
        subjects += [d.subject for d in judge.judge(window, RunLayout(), 1e-3) if d.code == "memory_growth"]
    return subjects


def test_rss_the_allocator_holds_free_is_not_growth_and_rss_held_by_objects_is() -> None:
    assert judge_memory(RSS - 562.0) == []  # every MiB gained is free in malloc's arenas
    assert judge_memory(np.full(len(RSS), 134.0)) == ["host memory in use"]  # the free memory stayed: objects hold it
    assert judge_memory(None) == ["host RSS"]  # no allocator reading: the RSS as it is
    # Not read at every fourth report (a costly read is spaced out): the in-use samples judged, none invented between.
    read = np.arange(len(RSS)) % 4 != 1
    assert judge_memory(np.where(read, RSS - 562.0, np.nan)) == []
    assert judge_memory(np.where(read, 134.0, np.nan)) == ["host memory in use"]


def test_a_window_of_batches_that_all_returned_none_is_judged() -> None:
    # No loss and no optimizer step, only skipped batches' logs: their count still reaches nonfinite_loss.
    judge = Diagnostician()
    told = []
    for report in range(3):
        window = Window(skipped_batches=10, skipped_read=10, skipped_nonfinite=[(10 * report, ("train_loss",))] * 10)
        assert not window.empty
        told.append([(d.code, d.severity) for d in judge.judge(window, RunLayout(), math.nan)])
    assert told == [[("nonfinite_loss", Severity.INFO)], [("nonfinite_loss", Severity.ERROR)], []]
    assert judge.detectors["nonfinite_loss"].skipped_batches == 30  # type: ignore[attr-defined]


def test_parameters_cut_off_from_the_loss_do_not_explain_small_updates() -> None:
    from lightning_lossguard.diagnostician import starves

    def found(code: str, **evidence: float) -> Diagnosis:
        return Diagnosis(code, Severity.INFO, 100, "", evidence)

    assert starves(found("dead_gradients", dead_params=2)) and starves(found("vanishing_gradients"))
    # A detached backbone holding 94% of the weights: the update ratio leaves it out (no optimizer step touches it),
    # so a tiny ratio is the head's own steps, for tiny_updates to judge.
    assert not starves(found("dead_gradients", absent_params=4, absent_weight_share=0.94))
    assert not starves(found("loss_plateau"))


def test_a_climb_the_loss_comes_back_from_is_noted_unless_the_run_broke() -> None:
    losses = np.concatenate([np.ones(50), np.geomspace(1, 30, 50), np.geomspace(30, 0.9, 50), np.full(100, 0.9)])
    for broke in (False, True):
        judge = Diagnostician()
        divergence = judge.detectors["loss_divergence"]
        said = [d for i in range(0, 250, 10) for d in divergence.update(list(range(i, i + 10)), losses[i : i + 10])]
        judge.accept([dataclasses.replace(said[0], severity=Severity.WARNING)])
        if broke:  # a learning rate x1000 that left only the output bias: its loss sits near the start's
            judge.accept([found("exploding_gradients", Severity.ERROR, 120)])
        notes = judge.hindsight()
        if broke:
            assert notes == []
        else:
            assert len(notes) == 1 and notes[0].startswith(f"loss_divergence at step {said[0].step} was a transient")


def test_a_code_reported_before_it_went_per_subject_is_not_reported_again_after_a_resume() -> None:
    # A state saved when tiny_updates was reported once per run keys it "tiny_updates"; it is now keyed per subject.
    diagnostician = Diagnostician()
    diagnostician.load_state_dict({"reported": {"tiny_updates": Severity.WARNING.rank}})
    plain = Diagnosis("tiny_updates", Severity.WARNING, 300, "Each optimizer step changes the weights ...", {}, [])
    assert diagnostician.accept([plain]) == []
    left_out = dataclasses.replace(plain, subject="left out of the optimizer")
    assert diagnostician.accept([left_out]) == [left_out]


@pytest.mark.parametrize(
    ("first_three", "level"),
    [
        ((1.4, 73.0, 110.0), 1.4),  # the first update blew the loss up: the untouched first batch is the level
        ((1.4, 1.3, 1.35), 1.35),  # a falling start: the median, as before
        ((0.2, 1.5, 1.1), 1.1),  # a noisy start under 10x: the median (the first batch may be a low draw)
        ((1.3, 73.0, 1.4), 1.4),  # one high batch is noise, not a blow-up: the median
    ],
)
def test_the_first_batches_level_is_the_first_batch_alone_when_the_first_update_blew_the_loss_up(
    first_three: tuple[float, float, float], level: float
) -> None:
    judge = Diagnostician()
    steps = list(range(3))
    judge.judge(Window(batch_steps=steps, loss=np.asarray(first_three)), RunLayout(), math.nan)
    assert judge.first_level == pytest.approx(level)
    # What dead_gradients is told: the loss of batches 10-30 over that level, while it is still that high.
    later = np.full(30, 70.0)
    judge.judge(Window(batch_steps=list(range(3, 33)), loss=later), RunLayout(), math.nan)
    assert judge.early_jump == pytest.approx(min(70.0, float(np.median([*first_three, *later]))) / level)
