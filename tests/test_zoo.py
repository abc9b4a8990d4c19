"""Every fault-zoo scenario in a real fit: each fault gets a correct code (naming the right layer where
the code is about one), each healthy control gets no warning or error."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.fault_zoo.run import run_scenario
from benchmarks.fault_zoo.scenarios import FAULTS, HEALTHY

SUBJECTS = {
    # scenario: (code, the layer or parameter the diagnosis must name)
    "deep_sigmoid": ("vanishing_gradients", "net.0"),
    "saturated_tanh": ("vanishing_gradients", "net.0"),
    "negative_bias_relu": ("dead_gradients", "net.2"),  # the deepest dead layer: the gradient stops there
    "zero_init": ("dead_gradients", "net.2"),
    "lr_too_high_sgd": ("exploding_gradients", "net.0"),
    "nan_gradient_sqrt": ("nonfinite_gradients", "net.4.weight"),
    "l2_weight_10": ("loss_term_imbalance", "l2"),
    "negated_loss": ("loss_divergence", "falling"),
}


@pytest.mark.parametrize("scenario", FAULTS, ids=lambda s: s.name)
def test_every_fault_gets_a_correct_diagnosis(tmp_path: Path, scenario: object) -> None:
    result = run_scenario(scenario.name, str(tmp_path))  # type: ignore[attr-defined]
    assert result.error == ""
    correct = result.correct
    assert correct is not None, f"expected one of {result.expect}, got {[d.code for d in result.diagnoses]}"
    assert correct.remedies and correct.evidence
    if scenario.name in SUBJECTS:  # type: ignore[attr-defined]
        code, subject = SUBJECTS[scenario.name]  # type: ignore[attr-defined]
        [named] = [d for d in result.diagnoses if d.code == code]
        assert named.subject == subject


@pytest.mark.parametrize("scenario", HEALTHY, ids=lambda s: s.name)
def test_healthy_runs_get_no_warning_or_error(tmp_path: Path, scenario: object) -> None:
    result = run_scenario(scenario.name, str(tmp_path))  # type: ignore[attr-defined]
    assert result.error == "" and result.alarms == []


def test_flat_loss_and_dead_units_are_told_apart(tmp_path: Path) -> None:
    flat = run_scenario("flat_hinge_region", str(tmp_path))
    dead = run_scenario("negative_bias_relu", str(tmp_path))
    [flat_dead] = [d for d in flat.diagnoses if d.code == "dead_gradients"]
    [relu_dead] = [d for d in dead.diagnoses if d.code == "dead_gradients"]
    assert flat_dead.evidence["output_layer_dead"] == 1.0 and "Smooth the loss" in flat_dead.remedies[0]
    assert relu_dead.evidence["output_layer_dead"] == 0.0 and "initialisation" in relu_dead.remedies[0]


def test_overfitting_names_its_cause_and_the_epoch_to_keep(tmp_path: Path) -> None:
    result = run_scenario("overfit_finetune", str(tmp_path))
    [rising] = [d for d in result.diagnoses if d.code == "val_loss_rising"]
    assert "overfitting" in rising.message and "best checkpoint is from epoch" in rising.message
    assert rising.evidence["train_change_fraction"] < 0 < rising.evidence["rise_fraction"]
