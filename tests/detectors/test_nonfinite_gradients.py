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


def test_gradients_that_overflow_after_the_loss_blew_up_put_the_learning_rate_first() -> None:
    # A learning rate far too high: the loss is 1e27 (finite) when the gradients overflow. Seen in four of the corpus'
    # learning rates x1000, answered "look at the named parameter" first before.
    detector = NonfiniteGradients()
    finite = rows([1.0, 0.5, 2.0], [40.0, 20.0, 90.0])
    assert detector.update([0, 1], finite, NAMES, DEPTH, loss_steps=[0, 1], losses=[1.7, 460.0]) == []
    overflow = rows([1e12, 1e11, 1e13], [math.inf, 1e12, math.inf])
    [found] = detector.update([2, 3], overflow, NAMES, DEPTH, loss_steps=[2, 3], losses=[8e20, 1e27])
    assert found.remedies[0] == "Lower the learning rate and clip gradients."
    assert found.remedies[1].startswith("Look at the named parameter")
    assert "The loss blew up before them: 1e+27 at step 3, 5.88e+26x the 1.7 of the first batch" in found.message
    assert found.evidence["loss_then"] == 1e27 and found.evidence["first_loss"] == 1.7


def test_the_loss_before_the_first_overflow_is_carried_across_reports() -> None:
    # The step that overflowed has no loss of its own in its window (it was not recorded): the last one before it.
    detector = NonfiniteGradients()
    detector.update([0, 1], rows([1.0, 1.0, 1.0], [9.0, 9.0, 9.0]), NAMES, DEPTH, loss_steps=[0, 1], losses=[2.0, 5e4])
    [found] = detector.update([2], rows([math.nan, 1.0, 1.0]), NAMES, DEPTH, loss_steps=[], losses=[])
    assert found.remedies[0].startswith("Lower the learning rate") and found.evidence["loss_then"] == 5e4
    assert "5e+04 at step 1" in found.message and found.evidence["loss_then_step"] == 1


def test_an_ordinary_loss_keeps_the_named_parameter_first() -> None:
    # sqrt/log at 0 in a custom loss: the loss is fine, one parameter's gradient is not; and a loss that starts at
    # exactly 0 has no scale to have blown up from.
    for first, then in ((1.7, 3.0), (1.7, 1000.0), (0.0, 5.0)):
        detector = NonfiniteGradients()
        norms = rows([1.0, 0.5, 2.0], [1.0, 0.5, math.nan])
        [found] = detector.update([0, 1], norms, NAMES, DEPTH, loss_steps=[0, 1], losses=[first, then])
        assert found.remedies[0].startswith("Look at the named parameter"), (first, then)
        assert "blew up" not in found.message and "loss_then" not in found.evidence


def test_gradients_that_overflow_as_the_loss_falls_to_minus_infinity_point_at_its_sign() -> None:
    norms = rows([1.0, 0.5, 2.0], [math.inf, 0.5, 2.0])
    [found] = NonfiniteGradients().update([0, 1], norms, NAMES, DEPTH, loss_steps=[0, 1], losses=[-1.4, -3e9])
    assert (
        found.remedies[0].startswith("Check the sign of the loss") and "fell towards -inf before them" in found.message
    )
    assert found.remedies[2] == "Lower the learning rate and clip gradients."


def test_a_nan_in_every_layer_under_an_ordinary_loss_puts_the_losss_backward_first() -> None:
    # A backward carries a NaN towards the input: in every layer, it started at the loss (torch.where over a missing
    # target, sqrt at 0). A parameter without a gradient (-1) does not count against "every".
    names, depth = [*NAMES, "unused.weight"], [*DEPTH, 0]
    norms = rows([1.0, 0.5, 2.0, -1.0], [math.nan, math.nan, math.nan, -1.0])
    [found] = NonfiniteGradients().update([0, 1], norms, names, depth, loss_steps=[0, 1], losses=[1.7, 1.5])
    assert found.remedies[0].startswith("Check the loss' backward") and "torch.where" in found.remedies[0]
    assert found.remedies[1].startswith("Look at the named parameter")
    assert "the NaN/Inf entered at the loss" in found.message and "across its 2 layers" in found.message


def test_a_nan_in_one_layer_only_keeps_the_named_parameter_first() -> None:
    # Only the layer nearest the loss: the NaN may start in that layer's own op.
    norms = rows([1.0, 0.5, 2.0], [1.0, 0.5, math.inf])
    [found] = NonfiniteGradients().update([0, 1], norms, NAMES, DEPTH, loss_steps=[0, 1], losses=[1.0, 1.0])
    assert found.remedies[0].startswith("Look at the named parameter") and "entered at the loss" not in found.message


def test_a_finite_bias_beside_a_nan_weight_nearest_the_loss_puts_the_batch_first() -> None:
    # The margin classifier's NaN batch: multi_margin_loss ignores the NaN scores, so the gradient it sends back is
    # finite (the output bias's), and the output weight's, which multiplies it by the NaN input, is not.
    names, depth = ["features.weight", "features.bias", "scores.weight", "scores.bias"], [0, 0, 1, 1]
    norms = rows([1.0, 0.5, 2.0, 0.3], [math.nan, math.nan, math.nan, 0.3])
    [found] = NonfiniteGradients().update([0, 1], norms, names, depth, loss_steps=[0, 1], losses=[1.1, 1.0])
    assert found.remedies[0].startswith("Inspect the batch") and found.remedies[1].startswith("Look at the named")
    assert "Beside them, scores.bias got a finite gradient" in found.message, found.message


def test_the_default_order_lists_the_batch_before_the_learning_rate() -> None:
    norms = rows([1.0, 0.5, 2.0], [1.0, 0.5, math.inf])
    [found] = NonfiniteGradients().update([0, 1], norms, NAMES, DEPTH, loss_steps=[0, 1], losses=[1.0, 1.0])
    assert [r.split()[0] for r in found.remedies] == ["Look", "Check", "Inspect", "Lower", "Under"]


GAN_NAMES = ["d.out.weight", "d.out.bias", "d.hidden.weight", "g.out.weight", "g.in.weight"]
GAN_DEPTH = [3, 3, 2, 1, 0]  # the generator feeds the discriminator: its layers lie below


def test_a_nan_that_fills_the_layers_nearest_the_loss_above_finite_ones_entered_at_the_loss() -> None:
    # A manual GAN's discriminator step on a NaN batch: its backward stops at the detached generated images, so the
    # generator keeps the finite gradients of its own step. training_step returns nothing: the loss is unseen, and
    # the batch comes first; with a recorded (finite) loss, the loss's backward.
    norms = rows([1.0, 0.5, 2.0, 0.3, 0.2], [math.nan, math.nan, math.nan, 0.3, 0.2])
    [unseen] = NonfiniteGradients().update([0, 1], norms, GAN_NAMES, GAN_DEPTH, loss_steps=[])
    assert "Every parameter of the 2 layers nearest the loss got a non-finite gradient, while the 2 below" in (
        unseen.message
    )
    assert [r.split()[0] for r in unseen.remedies[:3]] == ["Inspect", "Look", "Check"]
    [seen] = NonfiniteGradients().update([0, 1], norms, GAN_NAMES, GAN_DEPTH, loss_steps=[0, 1], losses=[1.4, 1.3])
    assert [r.split()[0] for r in seen.remedies[:3]] == ["Check", "Look", "Inspect"]


def test_a_nan_below_finite_layers_or_in_part_of_the_top_is_not_one_that_entered_at_the_loss() -> None:
    # Below a finite top layer (an op on a lower layer's weight), or beside a finite weight in the top block.
    for bad in ([1.0, 0.5, math.nan, math.nan, 0.2], [math.nan, math.nan, 2.0, math.nan, 0.2]):
        norms = rows([1.0, 0.5, 2.0, 0.3, 0.2], bad)
        [found] = NonfiniteGradients().update([0, 1], norms, GAN_NAMES, GAN_DEPTH, loss_steps=[])
        assert "entered at the loss" not in found.message and found.remedies[0].startswith("Look"), bad


def test_a_nan_in_every_layer_with_an_unseen_loss_puts_the_batch_first() -> None:
    norms = rows([1.0, 0.5, 2.0], [math.nan, math.nan, math.nan])
    [found] = NonfiniteGradients().update([0, 1], norms, NAMES, DEPTH, loss_steps=[])
    assert "entered at the loss" in found.message and found.remedies[0].startswith("Inspect the batch")
