"""The corpus score: recall with OutputMonitor and by LossGuard's own signals are counted apart."""

from __future__ import annotations

from benchmarks.corpus.faults import FAULTS
from benchmarks.corpus.run import Result, score
from lightning_lossguard import Diagnosis, Severity


def found(code: str, message: str = "", remedies: tuple[str, ...] = ()) -> Diagnosis:
    return Diagnosis(code, Severity.WARNING, 40, message, {}, list(remedies), "")


def faulty(diagnoses: list[Diagnosis]) -> Result:
    return Result("p", "tuning", 0, "exp_output", FAULTS["exp_output"].expect, 0, diagnoses)


def test_a_fault_named_only_by_output_monitor_counts_apart() -> None:
    by_monitor = faulty([found("output_range_mismatch", "the output is bounded at zero")])
    by_core = faulty([found("loss_divergence")])
    assert by_monitor.correct is not None and by_monitor.correct_without_outputs is None
    assert by_core.correct is not None and by_core.correct_without_outputs is not None
    [row] = [line for line in score([by_monitor, by_core]).splitlines() if line.startswith("| tuning")]
    assert "| 2 | 2 (100.0%) | 1 (50.0%) |" in row


def test_a_clamp_message_does_not_name_an_exp_output() -> None:
    clamp = faulty([found("output_range_mismatch", "40% of the predictions sit exactly at their lower bound")])
    assert clamp.correct is None


def test_an_internal_error_fails_a_faulty_run_that_was_named_before_it() -> None:
    broken = faulty([found("loss_divergence")])
    broken.gaps = ["monitoring: internal error in report at batch 85 (StopIteration: ); LossGuard stopped watching"]
    assert broken.correct is not None and broken.broken and not broken.passed
    assert "stopped watching (healthy or faulty): p[0] +exp_output." in score([broken])
    assert "stopped watching (healthy or faulty): none." in score([faulty([found("loss_divergence")])])


def test_the_first_alarms_first_remedy_is_scored_against_the_faults_advice() -> None:
    def lr_x1000(*diagnoses: Diagnosis) -> Result:
        return Result("p", "tuning", 0, "lr_x1000", FAULTS["lr_x1000"].expect, 0, list(diagnoses))

    lower = found("exploding_gradients", remedies=("Lower the learning rate, or add a warm-up.",))
    batch = found("nonfinite_loss", remedies=("Inspect the batch at the reported step for NaN/Inf.",))
    assert lr_x1000(lower, batch).advice_fits and not lr_x1000(batch, lower).advice_fits
    assert not lr_x1000().advice_fits  # nothing said: nothing fits
    [row] = [line for line in score([lr_x1000(lower), lr_x1000(batch)]).splitlines() if line.startswith("| lr_x1000")]
    assert "| 2 | 2 | 1 |" in row
    assert "lr_x1000: 'lower the learning rate', 'clip gradients', 'clipping is'" in score([lr_x1000(lower)])
