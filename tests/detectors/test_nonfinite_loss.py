import math

from lightning_lossguard.catalog import LOSS_FELL
from lightning_lossguard.detectors import NonfiniteLoss


def test_first_nan_is_reported_with_its_step_and_the_last_finite_loss() -> None:
    detector = NonfiniteLoss()
    assert detector.update([0, 1, 2], [0.9, 0.8, 0.7]) == []
    [found] = detector.update([3, 4, 5], [0.6, math.nan, math.nan])
    assert found.code == "nonfinite_loss" and found.severity == "error"
    assert found.evidence["first_step"] == 4
    assert found.evidence["nan_batches"] == 2
    assert found.evidence["last_finite_loss"] == 0.6
    assert "step 4" in found.message and found.remedies


def test_a_nan_at_the_end_of_a_blow_up_puts_the_learning_rate_before_the_batch() -> None:
    detector = NonfiniteLoss()
    assert detector.update([0, 1, 2], [2.3, 4e3, 3.7e14]) == []
    [found] = detector.update([3], [math.nan])
    assert "the loss blew up before it went NaN" in found.message and found.evidence["first_loss"] == 2.3
    assert found.remedies[0] == "Lower the learning rate." and found.remedies[-1].startswith("Inspect the batch")
    [fell] = NonfiniteLoss().update([0, 1, 2, 3], [-1.4, -3e2, -2e4, math.nan])
    assert "fell towards -inf" in fell.message and fell.remedies[0].startswith("Check the sign of the loss")
    assert fell.remedies[-1].startswith("Inspect the batch")
    assert fell.evidence[LOSS_FELL] == 1.0 and LOSS_FELL not in found.evidence  # reported ahead of its step's others
    # A NaN batch after a loss that fell, or one that grew less than blowup_factor: the batch comes first.
    for losses in ([2.3, 1.1, 0.6], [0.05, 0.4, 20.0], [-0.5, -1.2, -13.7]):
        [found] = NonfiniteLoss().update([0, 1, 2, 3], [*losses, math.nan])
        assert "blew up" not in found.message and found.remedies[0].startswith("Inspect the batch"), losses


def test_inf_counts_and_is_named() -> None:
    [found] = NonfiniteLoss().update([0, 1], [1.0, math.inf])
    assert found.evidence["inf_batches"] == 1 and "infinite" in found.message


def test_finite_losses_stay_quiet_even_when_huge_or_negative() -> None:
    detector = NonfiniteLoss()
    assert detector.update(list(range(5)), [1e30, -1e30, 0.0, -5.0, 3.0]) == []


def test_min_batches_threshold_delays_the_alarm() -> None:
    detector = NonfiniteLoss(NonfiniteLoss.Thresholds(min_batches=2))
    assert detector.update([0], [math.nan]) == []
    assert detector.update([1], [math.nan])


def test_a_skipped_batch_that_logged_a_nan_is_an_info_counted_over_the_run() -> None:
    detector = NonfiniteLoss()
    assert detector.skipped(3, []) == []  # skipped batches that logged finite values: nothing to say
    [found] = detector.skipped(2, [(12, ("train_loss",))])
    assert found.severity == "info" and found.step == 12 and found.remedies
    assert found.evidence == {
        "first_step": 12,
        "skipped_nonfinite_batches": 1,
        "skipped_batches_read": 5,
        "skipped_batches": 0,
        "batches": 0,
    }
    assert found.message.startswith("train_loss was not finite at step 12 in a batch that training_step skipped")
    [later] = detector.skipped(1, [(30, ("train_loss", "kl"))])
    assert later.evidence["skipped_nonfinite_batches"] == 2 and later.evidence["first_step"] == 12
    # A loss that is handed over non-finite is still the error, whatever was skipped before.
    [error] = detector.update([31], [math.nan])
    assert error.severity == "error" and error.evidence["first_step"] == 31


def test_skipped_batches_that_are_most_of_the_run_and_not_finite_are_an_error() -> None:
    # 10 batches a report. A few skipped NaN batches stay an info; when they are most of the run, it trains on
    # almost nothing: an error, once at least skipped_error_batches were skipped.
    rare = NonfiniteLoss()
    for i in range(10):
        found = rare.skipped(1, [(10 * i + 3, ("train_loss",))], skipped=1, batches=10)
    assert [d.severity for d in found] == ["info"]
    most = NonfiniteLoss()
    [first] = most.skipped(6, [(s, ("train_loss",)) for s in range(6)], skipped=6, batches=10)
    assert first.severity == "info"  # 6 skipped: fewer than skipped_error_batches
    for _ in range(3):
        [found] = most.skipped(6, [(s, ("train_loss",)) for s in range(6)], skipped=6, batches=10)
    assert found.severity == "error" and found.step == 0
    assert found.evidence["skipped_batches"] == 24 and found.evidence["batches"] == 40
    assert found.message.startswith("training_step skipped 24 of the 40 batches so far (60%) by returning None")
    # Skipped for other reasons (finite logs): most of the run, and no error.
    other = NonfiniteLoss()
    for _ in range(5):
        found = other.skipped(6, [(0, ("train_loss",))], skipped=6, batches=10)
    assert [d.severity for d in found] == ["info"]
    # A batch with a loss counts in the share whether or not any batch was skipped in its window.
    diluted = NonfiniteLoss()
    for _ in range(5):
        assert diluted.skipped(0, [], skipped=0, batches=10) == []
    for _ in range(4):
        found = diluted.skipped(6, [(0, ("train_loss",))] * 6, skipped=6, batches=10)
    assert [d.severity for d in found] == ["info"]  # 24 of 90 batches
    strict = NonfiniteLoss(NonfiniteLoss.Thresholds(skipped_error_share=0.25))
    for _ in range(5):
        assert strict.skipped(0, [], skipped=0, batches=10) == []
    for _ in range(4):
        found = strict.skipped(6, [(0, ("train_loss",))] * 6, skipped=6, batches=10)
    assert [d.severity for d in found] == ["error"]
