"""Window: what one report interval hands the detectors."""

import subprocess
import sys

import numpy as np

from lightning_lossguard.signals.window import Window


def test_rank_tail_takes_each_ranks_median_of_its_finite_phase_times() -> None:
    times = np.array([[3.0, np.nan, 1.0, 2.0], [5.0, 4.0, np.inf, 6.0], [np.nan] * 4, [1.0, 2.0, 3.0, 10.0]])
    tail = Window(batch_steps=[1, 2, 3, 4], ranks=4, rank_phase_ms={"backward": times}).rank_tail()
    np.testing.assert_array_equal(tail.phase_ms["backward"], [2.0, 5.0, np.nan, 2.5])


def test_rank_tail_does_not_import_numpy_masked_arrays() -> None:
    # np.median's first call imports numpy.ma (~13 ms): every rank of a distributed run would pay it at its first
    # report. A fresh interpreter, since any earlier test may have imported it.
    script = (
        "import sys, numpy as np\n"
        "from lightning_lossguard.signals.window import Window\n"
        "times = np.random.default_rng(0).random((2, 16)); times[0, 3] = np.nan\n"
        "Window(batch_steps=list(range(16)), ranks=2, rank_phase_ms={'data': times}).rank_tail()\n"
        "assert 'numpy.ma' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
