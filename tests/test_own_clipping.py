"""The run's own norm clipping, told from the gradient norms read before and after sampled optimizer steps."""

from __future__ import annotations

import math

from lightning_lossguard.own_clipping import MIN_CLIPPED, OwnClipping


def seen(*pairs: tuple[float, float]) -> float | None:
    clipping = OwnClipping()
    clipping.observe(pairs)
    return clipping.level


def test_norms_cut_to_one_value_on_two_steps_are_clipping_at_that_value() -> None:
    assert MIN_CLIPPED == 2
    assert seen((3.2, 0.5), (0.3, 0.3), (12.0, 0.4999995)) == 0.5
    assert seen((3.2, 0.5)) is None  # one cut: not yet


def test_steps_left_as_they_were_are_not_clipping() -> None:
    assert seen((3.2, 3.2), (1.0, 1.0), (0.5, 0.5)) is None


def test_cuts_that_do_not_agree_are_not_a_clip_by_norm() -> None:
    # Clipping by value, or an optimizer that shrinks gradients in place: cut, but not to one norm.
    assert seen((3.2, 0.5), (12.0, 2.0)) is None


def test_gradients_cleared_after_the_step_or_missing_are_not_cut() -> None:
    # An optimizer_step override that calls zero_grad() after the step reads 0 after it; a skipped AMP step reads inf.
    assert seen((3.2, 0.0), (5.0, 0.0), (math.inf, 0.5), (math.nan, 0.5), (0.0, 0.0)) is None


def test_a_norm_that_grew_across_the_step_rules_clipping_out_for_good() -> None:
    clipping = OwnClipping()
    clipping.observe([(1.0, 1.5)])  # an optimizer that adds to its gradients in place
    clipping.observe([(3.2, 0.5), (12.0, 0.5)])
    assert clipping.level is None
