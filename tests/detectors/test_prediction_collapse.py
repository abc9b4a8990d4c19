import numpy as np
import pytest

from lightning_lossguard.detectors.prediction_collapse import PredictionCollapse, class_shares

MAJORITY_ONLY = [[480, 0], [20, 0]]  # 96/4, every prediction the majority class
HEALTHY = [[470, 10], [6, 14]]


def test_a_majority_only_classifier_collapses_after_persist_validations() -> None:
    detector = PredictionCollapse()
    assert detector.update(10, 0, MAJORITY_ONLY) == []  # one validation is not enough
    [found] = detector.update(20, 1, MAJORITY_ONLY)
    assert found.code == "prediction_collapse" and found.step == 20 and found.severity == "warning"
    assert "predicts 1 of 2 classes" in found.message and "class 0 gets 100%" in found.message
    assert found.evidence["missing_share"] == pytest.approx(0.04) and found.evidence["min_recall"] == 0.0
    assert found.evidence["validations"] == 2 and found.evidence["epoch"] == 1
    assert "weight" in found.remedies[0] and any("focal" in r for r in found.remedies)


def test_a_recovery_resets_the_streak() -> None:
    detector = PredictionCollapse()
    detector.update(10, 0, MAJORITY_ONLY)
    detector.update(20, 1, HEALTHY)
    assert detector.update(30, 2, MAJORITY_ONLY) == []


def test_many_classes_collapsing_to_one() -> None:
    matrix = np.zeros((5, 5), dtype=int)
    matrix[:, 2] = 40  # balanced targets, all predicted as class 2
    found = PredictionCollapse(PredictionCollapse.Thresholds(persist=1)).update(3, 0, matrix, names="abcde")
    assert found and "predicts 1 of 5" in found[0].message and "class 2 (c)" in found[0].message


@pytest.mark.parametrize(
    "matrix",
    [
        HEALTHY,
        np.eye(4, dtype=int) * 50 + 5,  # balanced and good
        [[90, 5, 5], [10, 40, 0], [12, 0, 3]],  # a weak class still predicted sometimes: 2 of 3 predicted
        [[500, 0], [2, 0]],  # the minority is too rare to judge (min_support)
        [[20, 0], [5, 0]],  # too few samples
    ],
)
def test_healthy_or_unjudgeable_matrices_stay_quiet(matrix: object) -> None:
    detector = PredictionCollapse(PredictionCollapse.Thresholds(persist=1))
    assert detector.update(1, 0, matrix) == []  # type: ignore[arg-type]


def test_class_shares() -> None:
    shares = class_shares([[8, 2], [1, 3]])
    assert shares.support.tolist() == [10, 4] and shares.predicted.tolist() == [9, 5]
    assert shares.recall.tolist() == [0.8, 0.75] and shares.macro_recall == pytest.approx(0.775)
    with pytest.raises(ValueError, match="square"):
        class_shares([[1, 2, 3]])


def test_state_round_trip_keeps_the_streak() -> None:
    detector = PredictionCollapse()
    detector.update(10, 0, MAJORITY_ONLY)
    clone = PredictionCollapse()
    clone.load_state_dict(detector.state_dict())
    assert clone.update(20, 1, MAJORITY_ONLY)
