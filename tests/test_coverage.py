"""The coverage rules that need no fit: gradients that never passed through Lightning's optimizer hook."""

from __future__ import annotations

from lightning_lossguard.coverage import Coverage


def test_gradients_never_measured_over_two_report_intervals_are_a_gap_with_the_fix() -> None:
    coverage = Coverage()
    reason = coverage.unmeasured_gradients(gradient_rows=0, watched=4, batches=40, report_batches=20)
    assert reason is not None and "40 batches" in reason and "self.optimizers()" in reason


def test_measured_gradients_a_short_run_nothing_watched_or_a_known_gap_are_not() -> None:
    coverage = Coverage()
    assert coverage.unmeasured_gradients(gradient_rows=3, watched=4, batches=40, report_batches=20) is None
    assert coverage.unmeasured_gradients(gradient_rows=0, watched=4, batches=39, report_batches=20) is None
    assert coverage.unmeasured_gradients(gradient_rows=0, watched=0, batches=40, report_batches=20) is None
    coverage.add("gradients", "a sharded strategy LossGuard cannot read")
    assert coverage.unmeasured_gradients(gradient_rows=0, watched=4, batches=40, report_batches=20) is None
