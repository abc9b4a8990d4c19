"""stalled_training: the diagnosis built from what the watchdog saw (plain numbers and words)."""

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
        {"step": np.array([3.0, 2.7]), "data": np.array([1.6, np.nan]), "backward": np.array([1.0, 1.0])},
    )
    assert last is not None
    found = StalledTraining().stalled(3.0, 3.5, 25, "backward", "f.py:1 in g", 3, rank=0, last=last)
    expected = "at the last report (step 19) rank 0 loss 0.77, 3 ms per step + 1.6 ms data; rank 1 loss 1.2"
    assert expected in found.message
    assert "every rank prints its own" in found.message
    assert found.evidence["last_report_step"] == 19 and found.evidence["ranks"] == 2
    assert last_report(0, None, {}) is None


def test_it_is_an_event_code_without_thresholds() -> None:
    assert EVENT_DETECTORS["stalled_training"] is StalledTraining
    assert StalledTraining.Thresholds().describe() == {}
