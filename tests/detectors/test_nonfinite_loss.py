import math

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
