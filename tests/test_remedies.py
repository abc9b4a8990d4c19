"""Remedies that fit the run: what the run already does is never advised, and the most likely remedy stays first."""

from __future__ import annotations

from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.remedies import tailor
from lightning_lossguard.run_layout import RunSettings

REMEDIES = [
    "Clip gradients: Trainer(gradient_clip_val=1.0).",
    "Lower the learning rate or the momentum (10x).",
    "Use an LR schedule with warm-up.",
    "Lower beta1 or the momentum of the optimizer.",
    "Check the data for outliers.",
]


def diagnosis(remedies: list[str] = REMEDIES) -> Diagnosis:
    return Diagnosis("loss_divergence", Severity.ERROR, 120, "The loss rose.", {"ratio": 12.0}, list(remedies))


def test_nothing_changes_when_no_remedy_contradicts_the_run() -> None:
    found = diagnosis()
    assert tailor(found, RunSettings(optimizers=("SGD",), momentum=0.9)) is found


def test_with_clipping_on_it_never_says_add_clipping() -> None:
    tailored = tailor(diagnosis(), RunSettings(clip_val=0.5, momentum=0.9))
    assert tailored.remedies[0] == (
        "Clipping is already on (gradient_clip_val=0.5): lower the learning rate rather than rely on it."
    )
    assert not any("Clip gradients" in r for r in tailored.remedies)
    assert tailored.remedies[1:] == REMEDIES[1:]  # the rest, in the same order


def test_clipping_the_runs_own_code_does_is_told_as_such() -> None:
    tailored = tailor(diagnosis(), RunSettings(clip_val=0.5, own_clipping=True))
    assert tailored.remedies[0] == (
        "Clipping is already on (the run's own code clips the norm to 0.5): lower the learning rate rather than rely "
        "on it."
    )


def test_clipping_by_value_is_clipping_too() -> None:
    # A GRU trained with gradient_clip_algorithm="value" at x1000 was told "Clip gradients" (held-out corpus).
    tailored = tailor(diagnosis(), RunSettings(clip_value=0.5))
    assert tailored.remedies[0] == (
        "Clipping is already on (by value: gradient_clip_val=0.5, gradient_clip_algorithm='value'): lower the learning "
        "rate rather than rely on it."
    )
    assert not any(r.startswith("Clip gradients") for r in tailored.remedies)


def test_plain_sgd_gets_no_momentum_advice() -> None:
    tailored = tailor(diagnosis(), RunSettings(optimizers=("SGD",), momentum=0.0))
    assert tailored.remedies == [REMEDIES[0], "Lower the learning rate.", REMEDIES[2], REMEDIES[4]]


def test_a_run_with_a_schedule_is_told_to_check_its_peak_not_to_add_one() -> None:
    tailored = tailor(diagnosis(), RunSettings(scheduler=True, momentum=0.9))
    assert "Use an LR schedule with warm-up." not in tailored.remedies
    assert tailored.remedies[2].startswith("Check the LR schedule: its peak")


def test_one_clipping_remedy_at_most() -> None:
    already = "Clipping is on and fired on 90% of steps: lower the learning rate."
    tailored = tailor(diagnosis([already, *REMEDIES]), RunSettings(clip_val=1.0))
    assert [r for r in tailored.remedies if r.startswith("Clipping is")] == [already]
    assert tailored.evidence == {"ratio": 12.0} and tailored.step == 120  # only the remedies are rewritten
