"""What the diagnostician keeps once a run is broken: the facts, not the detectors' second thoughts about it."""

from __future__ import annotations

from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.diagnostician import Diagnostician, RunLayout


def found(code: str, severity: Severity, step: int) -> Diagnosis:
    return Diagnosis(code, severity, step, f"{code} at {step}")


def test_after_a_blow_up_a_hesitant_divergence_is_a_consequence_not_a_card() -> None:
    judge = Diagnostician()
    judge.accept([found("exploding_gradients", Severity.ERROR, 109)])
    # The loss's block medians lag the blow-up: "rose only 7x, maybe a moving target" is not news after it.
    assert judge.accept([found("loss_divergence", Severity.INFO, 119)]) == []
    assert "loss_divergence" in judge.consequences
    # A non-finite loss after the break is a fact and still reported.
    assert [d.code for d in judge.accept([found("nonfinite_loss", Severity.ERROR, 129)])] == ["nonfinite_loss"]
    judge.accept([found("vanishing_gradients", Severity.WARNING, 129)])
    [note] = judge.unjudged(RunLayout())
    assert note.endswith("not reported separately: loss_divergence, vanishing_gradients.")
    # Once the divergence is itself an error it is reported, and the note no longer says it is not.
    assert [d.code for d in judge.accept([found("loss_divergence", Severity.ERROR, 139)])] == ["loss_divergence"]
    [note] = judge.unjudged(RunLayout())
    assert note.endswith("not reported separately: vanishing_gradients.")


def test_before_any_break_the_same_info_is_reported() -> None:
    judge = Diagnostician()
    assert [d.code for d in judge.accept([found("loss_divergence", Severity.INFO, 119)])] == ["loss_divergence"]
    assert judge.consequences == set()
