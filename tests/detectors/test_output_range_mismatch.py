import pytest

from lightning_lossguard.detectors.output_range_mismatch import OutputRangeMismatch, RangeCounts


def regression(**kwargs: float) -> RangeCounts:
    base = {"predictions": 512, "targets": 512, "pred_min": 0.0, "pred_max": 2.0, "target_min": -5.0, "target_max": 2}
    return RangeCounts("regression", **{**base, **kwargs})  # type: ignore[arg-type]


def test_a_final_relu_with_negative_targets_is_a_clamp() -> None:
    [found] = OutputRangeMismatch().update(40, regression(at_floor=400, below_floor=380, above_ceiling=10))
    assert found.code == "output_range_mismatch" and found.severity == "warning" and found.step == 40
    assert found.subject == "clamped output" and "lower bound (0)" in found.message and "ReLU" in found.message
    assert found.evidence["clamped_share"] == 400 / 512 and found.evidence["unreachable_share"] == 380 / 512
    assert "activation" in found.remedies[0]


def test_a_saturated_upper_bound_is_named_too() -> None:
    counts = regression(at_ceiling=300, above_ceiling=250, pred_max=1.0, target_max=9.0)
    [found] = OutputRangeMismatch().update(1, counts)
    assert "upper bound (1)" in found.message and "up to 9" in found.message


@pytest.mark.parametrize(
    "counts",
    [
        regression(at_floor=0, below_floor=300),  # no clamp: targets outside a young model's range
        regression(at_floor=400, below_floor=20),  # clamped, but the targets are above the bound (ReLU, y >= 0)
        regression(at_floor=511, at_ceiling=511, below_floor=250, above_ceiling=250),  # a constant output
        regression(at_floor=400, below_floor=380, predictions=100, targets=100),  # too few samples
    ],
)
def test_no_clamp_or_reachable_targets_stay_quiet(counts: RangeCounts) -> None:
    assert OutputRangeMismatch().update(1, counts) == []


def test_an_exp_head_with_negative_targets_is_a_bound_after_two_windows() -> None:
    detector = OutputRangeMismatch()
    exp_head = regression(pred_min=1e-4, pred_max=4.0, negative_targets=200, above_ceiling=10, below_floor=200)
    assert detector.update(10, exp_head) == []  # one window could be a young model
    [found] = detector.update(20, exp_head)
    assert found.subject == "bounded output" and found.step == 20
    assert "no prediction was negative" in found.message and "39% of the targets lie below zero" in found.message
    assert found.evidence["windows"] == 2 and found.evidence["unreachable_share"] == 200 / 512
    assert detector.update(30, exp_head) == []  # said once per streak


def test_a_negated_exp_head_with_positive_targets_is_a_bound_too() -> None:
    detector = OutputRangeMismatch()
    counts = regression(
        pred_min=-3.0, pred_max=-1e-3, positive_targets=300, above_ceiling=310, below_floor=5, target_max=4.0
    )
    detector.update(1, counts)
    [found] = detector.update(2, counts)
    assert "no prediction was positive" in found.message and "above zero" in found.message


@pytest.mark.parametrize(
    "counts",
    [
        regression(pred_min=-1.8, negative_targets=200),  # predictions cross zero: an unbounded head
        regression(pred_min=0.4, negative_targets=250, above_ceiling=240),  # a constant output misses both sides
        regression(pred_min=1e-3, negative_targets=60),  # few targets below zero: a positive-valued target
        # a run-away output (a flipped sign): every target is past its largest prediction, 40% before zero
        regression(pred_min=-900.0, pred_max=-25.0, positive_targets=300, above_ceiling=512),
    ],
)
def test_a_head_that_crosses_zero_or_misses_both_sides_is_no_bound(counts: RangeCounts) -> None:
    detector = OutputRangeMismatch()
    assert detector.update(1, counts) == [] and detector.update(2, counts) == []


def test_a_window_that_crosses_zero_restarts_the_streak() -> None:
    detector = OutputRangeMismatch()
    exp_head = regression(pred_min=1e-4, negative_targets=200)
    detector.update(1, exp_head)
    detector.update(2, regression(pred_min=-0.5, negative_targets=200))
    assert detector.update(3, exp_head) == []
    assert len(detector.update(4, exp_head)) == 1


def test_probabilities_outside_the_unit_interval() -> None:
    counts = RangeCounts("probabilities", 1000, 1000, outside_unit=300, pred_min=-2.0, pred_max=3.5)
    [found] = OutputRangeMismatch().update(5, counts)
    assert "outside [0, 1]" in found.message and found.evidence["outside_share"] == 0.3
    assert "sigmoid" in found.remedies[0]
    healthy = RangeCounts("probabilities", 1000, 1000, outside_unit=0, pred_min=0.01, pred_max=0.99)
    assert OutputRangeMismatch().update(5, healthy) == []


def test_softmax_rows_fed_as_logits() -> None:
    counts = RangeCounts("logits", 4000, 1000, squashed=1000, rows=1000, classes=4, pred_min=0.01, pred_max=0.9)
    [found] = OutputRangeMismatch().update(5, counts)
    assert "softmax" in found.message and "remove the softmax" in found.remedies[0]
    binary = RangeCounts("logits", 1000, 1000, squashed=1000, rows=1000, classes=0)
    assert "sigmoid" in OutputRangeMismatch().update(5, binary)[0].message
    logits = RangeCounts("logits", 4000, 1000, squashed=3, rows=1000, classes=4, pred_min=-6.0, pred_max=7.0)
    assert OutputRangeMismatch().update(5, logits) == []


def test_thresholds_decide() -> None:
    counts = regression(at_floor=400, below_floor=380, above_ceiling=10)
    detector = OutputRangeMismatch(OutputRangeMismatch.Thresholds(unreachable_share=0.9))
    assert detector.update(1, counts) == []


def test_state_round_trip() -> None:
    detector = OutputRangeMismatch()
    detector.update(1, regression())
    clone = OutputRangeMismatch()
    clone.load_state_dict(detector.state_dict())
    assert clone.windows == 1


def test_unknown_kind_fails() -> None:
    with pytest.raises(ValueError, match="kind must be one of regression, probabilities, logits"):
        OutputRangeMismatch().update(1, RangeCounts("scores", 512, 512))
