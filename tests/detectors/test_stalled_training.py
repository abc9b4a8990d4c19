"""stalled_training: the diagnosis built from what the watchdog saw (plain numbers and words)."""

import subprocess
import sys

import numpy as np

from lightning_lossguard.detectors import EVENT_DETECTORS, StalledTraining
from lightning_lossguard.detectors.stalled_training import last_report


def test_while_stalled_it_names_the_step_the_phase_and_the_frame() -> None:
    found = StalledTraining().stalled(3.0, 3.4, 12, "backward", "autograd/graph.py:979 in run_backward", 3)
    assert found.code == "stalled_training" and found.severity == "error" and found.step == 12
    assert "No training step completed for 3.4 s" in found.message and "step 12 in backward" in found.message
    assert "still stalled" in found.message and "autograd/graph.py:979" in found.message
    ev = found.evidence
    assert ev["stalled_s"] == 3.4 and ev["timeout_s"] == 3.0 and ev["resumed"] == 0 and ev["threads"] == 3
    assert found.subject == "step 12" and found.remedies


def test_once_a_step_completed_it_says_how_long_it_stalled() -> None:
    found = StalledTraining().stalled(
        3.0, 10.02, 5, "between batches after step 5: data loading", "x.py:1 in f", 2, resumed=True, detected_s=3.3
    )
    assert "stalled for 10.0 s" in found.message and "went on" in found.message
    assert "data loading" in found.message and "in between" not in found.message
    assert found.evidence["resumed"] == 1 and found.evidence["detected_after_s"] == 3.3


def test_under_ddp_it_tells_what_each_rank_sent_at_the_last_report() -> None:
    last = last_report(
        19,
        np.array([0.77, 1.2]),
        {
            "step": np.array([[3.0, np.nan, 2.0, 4.0], [2.7, 2.7, np.inf, 2.6]]),
            "data": np.array([[1.6, 1.6, 1.0, 9.0], [np.nan] * 4]),
            "backward": np.ones((2, 4)),
        },
    )
    assert last is not None
    # Each rank's median of its finite times (NaN where it has none).
    assert last.step_ms == [3.0, 2.7] and last.data_ms[0] == 1.6 and np.isnan(last.data_ms[1])
    found = StalledTraining().stalled(3.0, 3.5, 25, "backward", "f.py:1 in g", 3, rank=0, last=last)
    expected = "at the last report (step 19) rank 0 loss 0.77, 3 ms per step + 1.6 ms data; rank 1 loss 1.2"
    assert expected in found.message
    assert "every rank prints its own" in found.message
    assert found.evidence["last_report_step"] == 19 and found.evidence["ranks"] == 2
    assert last_report(0, None, {}) is None
    only_steps = last_report(3, None, {"step": np.array([[1.0, 3.0], [2.0, 2.0]])})
    assert only_steps is not None and only_steps.step_ms == [2.0, 2.0] and np.isnan(only_steps.data_ms).all()


def test_the_last_reports_medians_do_not_import_numpy_masked_arrays() -> None:
    # np.median's first call imports numpy.ma (~13 ms). A fresh interpreter, since any earlier test may have.
    script = (
        "import sys, numpy as np\n"
        "from lightning_lossguard.detectors.stalled_training import last_report\n"
        "times = np.random.default_rng(0).random((2, 16)); times[0, 3] = np.nan\n"
        "assert last_report(5, None, {'step': times, 'data': times}) is not None\n"
        "assert 'numpy.ma' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_it_is_an_event_code_without_thresholds() -> None:
    assert EVENT_DETECTORS["stalled_training"] is StalledTraining
    assert StalledTraining.Thresholds().describe() == {}
