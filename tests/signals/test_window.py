"""Window: what one report interval hands the detectors."""

import numpy as np

from lightning_lossguard.signals.window import Window


def test_rank_tail_keeps_each_ranks_phase_times_and_last_loss() -> None:
    times = np.array([[3.0, np.nan, 1.0, 2.0], [5.0, 4.0, np.inf, 6.0]])
    losses = np.array([[0.5, 0.4, 0.3, 0.2], [0.6, 0.5, 0.4, np.nan]])
    window = Window(
        batch_steps=[1, 2, 3, 4], ranks=2, rank_loss=losses, rank_phase_ms={"backward": times, "data": np.zeros(0)}
    )
    tail = window.rank_tail()
    assert (tail.step, tail.ranks) == (4, 2) and list(tail.phase_rows) == ["backward"]  # no empty phases
    np.testing.assert_array_equal(tail.phase_rows["backward"], times)
    np.testing.assert_array_equal(tail.loss, [0.2, np.nan])
