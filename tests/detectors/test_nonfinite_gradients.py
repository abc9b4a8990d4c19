import math

import numpy as np

from lightning_lossguard.detectors import NonfiniteGradients

NAMES = ["enc.weight", "enc.bias", "head.weight"]
DEPTH = [0, 0, 1]


def rows(*values: list[float]) -> np.ndarray:
    return np.array(values, dtype=float)


def test_names_the_parameter_nearest_the_loss_first() -> None:
    norms = rows([1.0, 0.5, 2.0], [math.nan, 0.4, math.inf])
    [found] = NonfiniteGradients().update([0, 1], norms, NAMES, DEPTH)
    assert found.severity == "error"
    assert found.subject == "head.weight"
    assert found.message.index("head.weight") < found.message.index("enc.weight")
    assert found.evidence["first_step"] == 1 and found.evidence["nonfinite_params"] == 2


def test_a_nonfinite_loss_step_is_left_to_nonfinite_loss() -> None:
    norms = rows([math.nan, math.nan, math.nan])
    assert NonfiniteGradients().update([7], norms, NAMES, DEPTH, nonfinite_loss_steps={7}) == []


def test_a_step_whose_loss_was_not_recorded_is_not_said_to_have_a_finite_loss() -> None:
    # Manual optimization whose training_step returns nothing: the gradients are seen, the loss is not.
    norms = rows([1.0, 0.5, 2.0], [math.nan, 0.4, math.inf])
    [unseen] = NonfiniteGradients().update([0, 1], norms, NAMES, DEPTH, loss_steps=[])
    assert "finite" in unseen.message and "while the loss was finite" not in unseen.message
    assert "not recorded" in unseen.message
    [seen] = NonfiniteGradients().update([0, 1], norms, NAMES, DEPTH, loss_steps=[0, 1])
    assert "while the loss was finite" in seen.message


def test_isolated_gradscaler_skips_are_normal() -> None:
    detector = NonfiniteGradients()
    norms = np.ones((400, 3))
    for i in (0, 1, 2, 3, 150, 300):  # early scale search, then rare skips
        norms[i, 2] = math.inf
    for start in range(0, 400, 50):
        found = detector.update(
            list(range(start, start + 50)),
            norms[start : start + 50],
            NAMES,
            DEPTH,
            scaler_active=True,
            scale=2.0**14,
        )
        assert found == []


def test_persistent_skips_under_a_scaler_are_reported() -> None:
    norms = np.full((20, 3), math.inf)
    [found] = NonfiniteGradients().update(list(range(20)), norms, NAMES, DEPTH, scaler_active=True, scale=8.0)
    assert found.evidence["consecutive_skips"] == 20
    assert "consecutive" in found.message


def test_a_collapsed_scale_is_reported() -> None:
    norms = np.ones((10, 3))
    norms[4] = math.inf
    [found] = NonfiniteGradients().update(list(range(10)), norms, NAMES, DEPTH, scaler_active=True, scale=0.25)
    assert "collapsed" in found.message and found.evidence["loss_scale"] == 0.25


def test_parameters_without_gradient_are_not_nonfinite() -> None:
    norms = rows([-1.0, 1.0, 1.0])
    assert NonfiniteGradients().update([0], norms, NAMES, DEPTH) == []
