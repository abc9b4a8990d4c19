"""The stride replay of the gradient detectors' inputs (``benchmarks.corpus.replay``)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.corpus.replay import capture, replay, sampled
from lightning_lossguard.detectors.dead_gradients import DeadGradients
from lightning_lossguard.detectors.exploding_gradients import ExplodingGradients
from lightning_lossguard.detectors.vanishing_gradients import VanishingGradients


def test_a_sampling_keeps_the_steps_on_the_stride_and_the_reports_last_with_the_loss_whole() -> None:
    steps = list(range(10, 20))
    norms, layers, losses = np.arange(10.0), np.arange(20.0).reshape(10, 2), list(range(10))
    call = ((steps, norms, layers, ["a", "b"], None, losses), {"loss_steps": steps})
    args, kwargs = sampled(call, ExplodingGradients, 3, 1)
    assert args[0] == [10, 13, 16, 19]
    assert args[1].tolist() == [0.0, 3.0, 6.0, 9.0] and args[2][:, 0].tolist() == [0.0, 6.0, 12.0, 18.0]
    assert args[5] == losses and kwargs == {"loss_steps": steps}  # per batch: recorded on every step


def test_a_change_of_the_watched_parameters_starts_a_fresh_detector() -> None:
    # Unfreezing a backbone widens the per-layer rows; the run's detectors start over then (a ragged history fails).
    rng = np.random.default_rng(0)
    calls = []
    for width, start in ((3, 0), (5, 30)):
        steps = list(range(start, start + 30))
        rows = 10 ** rng.normal(-1, 0.1, (30, width))
        paths = [(0, width - 1, width)]
        calls.append(((steps, rows, [f"l{i}" for i in range(width)], paths, rows.sum(1), [1.0] * 30), {}))
    assert replay(VanishingGradients, calls, 2, 0, warm_up=0) is None


@pytest.mark.parametrize(
    ("job", "cls"),
    [
        (("tabular_mlp", 0, "lr_x1000"), ExplodingGradients),
        (("mdn_inverse_sine_h", 0, "lr_x1000"), DeadGradients),
    ],
)
def test_a_replay_of_every_step_gives_the_fits_own_verdict(job: tuple[str, int, str], cls: type) -> None:
    result, calls = capture(job)
    assert cls.update.__qualname__ == f"{cls.__name__}.update"  # the recording is undone
    assert result.correct is not None and result.correct.code == cls.code
    found = replay(cls, calls[cls.code], 1, 0)
    assert found is not None and (found.code, found.step, found.message) == (
        result.correct.code,
        result.correct.step,
        result.correct.message,
    )
