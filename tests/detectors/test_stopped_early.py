"""A run early stopping ended before it learned anything, driven with scripted evaluations and loss levels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from lightning_lossguard.detectors.loss_plateau import LossPlateauThresholds
from lightning_lossguard.detectors.stopped_early import StoppedRun, judge_stopped_run
from lightning_lossguard.detectors.val_loss_rising import ValLossRisingThresholds
from lightning_lossguard.diagnosis import Diagnosis

CREEPING_UP = [1.933, 1.9333, 1.9337, 1.9342, 1.9348, 1.9354, 1.936, 1.9367, 1.9375, 1.9382, 1.939]
"""A frozen graph network's validation loss, one evaluation an epoch, until early stopping (patience 10) ended it."""


def judge(
    values: list[float], first_train: float, train_now: float, metric: str = "val_loss", **kwargs: Any
) -> Diagnosis | None:
    run = StoppedRun(metric, 10, np.asarray(values), first_train, train_now, **kwargs)
    return judge_stopped_run(run, 11, LossPlateauThresholds(), ValLossRisingThresholds())


def test_a_classifier_that_stayed_at_chance_is_a_plateau_warning_with_the_trained_parameters_first() -> None:
    found = judge(CREEPING_UP, 1.946, 1.93, first_batch=1.94614, update_ratio=0.054, trainable_share=0.018)
    assert found is not None and found.code == "loss_plateau" and found.severity == "warning"
    assert found.message.startswith("Early stopping ended the run at step 11: val_loss never went below its first")
    assert (
        "its first batch's loss was 1.9461, ln 7 = 1.9459" in found.message
        and "with 1.8% of the model's parameters trained" in found.message
    )
    assert found.remedies[0].startswith("Check which parameters require a gradient")
    assert found.evidence["classes_at_start"] == 7 and found.evidence["evaluations"] == 11
    assert found.evidence["early_stopping_patience"] == 10 and found.step == 11


def test_tiny_steps_put_raising_the_learning_rate_first() -> None:
    found = judge(CREEPING_UP, 0.9, 0.9, update_ratio=1e-7, trainable_share=1.0)
    assert found is not None and found.severity == "warning"
    assert "each step changes the weights by a median 1e-07 of their size" in found.message
    assert found.remedies[0].startswith("Raise the learning rate")
    # Tiny steps alone fit a pretrained model too: the steps are named, not the model.
    assert found.message.endswith("the steps are too small for the model to learn anything it could validate.")
    frozen_too = judge(CREEPING_UP, 0.9, 0.9, update_ratio=1e-7, trainable_share=0.004)
    assert frozen_too is not None and frozen_too.message.endswith("the model learned nothing it could validate.")


def test_almost_nothing_trained_is_a_warning() -> None:
    found = judge(CREEPING_UP, 0.9, 0.89, update_ratio=0.01, trainable_share=0.004)
    assert found is not None and found.severity == "warning"
    assert "only 0.4% of the model's parameters are trained" in found.message


def test_without_a_second_sign_it_is_an_info_that_names_a_converged_start() -> None:
    """Fine-tuning a converged classifier on more of its data stops this way: nothing left to learn is no alarm."""
    found = judge(
        [0.6073, 0.6079, 0.6101, 0.6153], 0.61, 0.604, first_batch=0.69, update_ratio=0.003, trainable_share=1.0
    )
    assert found is not None and found.code == "loss_plateau" and found.severity == "info"
    assert "nothing left to learn here (fine-tuning a converged model)" in found.message
    assert "parameters trained" not in found.message  # all of them are
    # A first batch near ln 2 = 0.6931, but not within its tolerance: a pretrained start, not a chance one.
    assert found.evidence["classes_at_start"] == 0


@pytest.mark.parametrize(
    "values, first_train, train_now",
    [
        (CREEPING_UP, 1.9, 1.7),  # the training loss fell: val_loss_rising's to judge
        (CREEPING_UP[:2], 1.9, 1.9),  # two evaluations: too few
        ([1.9, math.nan, 1.95, 1.96], 1.9, 1.9),  # a non-finite evaluation: other codes
        (CREEPING_UP, math.nan, 1.9),  # no training loss
        (CREEPING_UP, 0.0, 0.0),  # a loss zero by design: relative change means nothing
        ([1.9, 1.97, 1.95, 1.98], 1.0, 1.3),  # the training loss rose, but the metric did not climb
    ],
)
def test_runs_that_learned_or_cannot_be_told_are_not_judged(
    values: list[float], first_train: float, train_now: float
) -> None:
    assert judge(values, first_train, train_now, update_ratio=1e-7, trainable_share=0.001) is None


def test_a_negative_falling_training_loss_under_a_climbing_metric_is_a_negated_loss() -> None:
    climbing = [1.9377, 1.9428, 1.9482, 1.9543, 1.9609, 1.9683, 1.9769, 1.9868, 1.9984, 2.012, 2.0281]
    found = judge(climbing, -1.963, -2.079, update_ratio=0.045, trainable_share=1.0)
    assert found is not None and found.code == "val_loss_rising" and found.subject == "val_loss"
    assert found.severity == "warning" and "looks negated" in found.message
    assert found.remedies[0].startswith("Check the sign of the loss returned by training_step")
    wobbling = [1.9377, 1.9428, 1.9401, 1.9543]  # four noisy evaluations: not a climb
    assert judge(wobbling, -1.963, -2.079) is None


def test_a_rising_training_loss_under_a_climbing_metric_is_unstable_optimisation() -> None:
    found = judge([1.0, 1.1, 1.3, 1.6], 1.0, 1.4)
    assert found is not None and found.code == "val_loss_rising" and "unstable optimisation" in found.message
    assert found.remedies[0].startswith("Lower the learning rate")
    assert found.evidence["train_change_fraction"] == pytest.approx(0.4)
    assert "(1 -> 1.4, +40%)" in found.message
    # A blow-up is told as a factor, not as a percentage in the thousands.
    found = judge([1.0, 1.1, 1.3, 1.6], 1.0, 2.4e6)
    assert found is not None and "(1 -> 2.4e+06, 2.4e+06x)" in found.message


def test_a_flat_loss_is_judged_at_the_stop_though_the_metric_moved_unless_loss_plateau_had_its_batches() -> None:
    """A frozen classifier's last bias fits the class priors: the validation loss dips for two evaluations, then
    early stopping waits out its patience. The training loss never fell: loss_plateau's, at the stop."""
    dipped = [2.085, 2.081, 2.080, *[2.081 + 0.0005 * i for i in range(20)]]
    found = judge(dipped, 2.0794, 2.075, first_batch=2.0794, update_ratio=0.02, trainable_share=0.004)
    assert found is not None and found.code == "loss_plateau" and found.severity == "warning"
    assert "val_loss stopped improving at evaluation 3 of 23 (2.085 first, 2.08 lowest" in found.message
    assert found.evidence["best_val_loss"] == 2.080
    assert judge(dipped, 2.0794, 2.075, first_batch=2.0794, trainable_share=0.004, plateau_judged=True) is None
    # A negated or unstable reading needs a metric that never improved and climbed.
    assert judge(dipped, -2.0, -2.5) is None
    assert judge(dipped, 1.0, 1.5) is None


FLAT_ACCURACY = [0.1432, 0.1432, 0.1429, 0.1432, 0.1425, 0.1432]
"""A frozen classifier's validation accuracy under ``EarlyStopping(monitor="val_acc", mode="max", patience=5)``."""


def test_a_stop_waiting_for_a_higher_accuracy_is_judged_the_same_way() -> None:
    found = judge(
        FLAT_ACCURACY, 1.946, 1.944, "val_acc", first_batch=1.9459, trainable_share=0.018, higher_is_better=True
    )
    assert found is not None and found.code == "loss_plateau" and found.severity == "warning"
    assert (
        "val_acc never went above its first evaluation in 6 evaluations (0.1432 first, 0.1432 last, the "
        "highest after it 0.1432)" in found.message
    )
    assert found.evidence["first_val_metric"] == 0.1432 and "first_val_loss" not in found.evidence
    rose_then_fell = [0.2, 0.35, 0.34, 0.33, 0.33, 0.32, 0.3]
    improved = judge(rose_then_fell, 1.9, 1.9, "val_acc", first_batch=1.9459, higher_is_better=True)
    assert improved is not None and "val_acc stopped improving at evaluation 2 of 7 (0.2 first, 0.35 highest" in (
        improved.message
    )


def test_a_falling_accuracy_under_a_rising_loss_is_unstable_but_an_accuracy_has_no_sign_to_call_negated() -> None:
    falling = [0.6, 0.55, 0.41, 0.3]
    found = judge(falling, 1.0, 1.4, "val_acc", higher_is_better=True)
    assert found is not None and found.code == "val_loss_rising" and "unstable optimisation" in found.message
    assert found.subject == "val_acc"
    assert judge([0.3, 0.41, 0.55, 0.6], 1.0, 1.4, "val_acc", higher_is_better=True) is None  # it learned
    # A negative, falling training loss beside a falling accuracy: overfitting or a sign; no sign tells which.
    assert judge(falling, -1.9, -2.5, "val_acc", higher_is_better=True) is None
