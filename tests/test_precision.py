"""Mixed precision: the same diagnoses as float32 on the same runs, and no alarm from GradScaler skips.

A real float16 GradScaler runs on CPU (Lightning maps ``"16-mixed"`` to bf16 on CPU, so the plugin is
built by hand): its first steps overflow and are skipped while the scale searches down from 2**24.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from benchmarks.fault_zoo.run import run_scenario
from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from tests.conftest import trainer


def fp16_with_scaler(init_scale: float = 2.0**24) -> dict[str, Any]:
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=scaler)]}


PRECISIONS = {
    "32-true": lambda: {"precision": "32-true"},
    "bf16-mixed": lambda: {"precision": "bf16-mixed"},
    "16-mixed+GradScaler": fp16_with_scaler,
}


@pytest.mark.parametrize("scenario", ["nan_in_batch", "lr_too_high_sgd"])
def test_same_diagnoses_in_every_precision(tmp_path: Path, scenario: str) -> None:
    found = {}
    for name, extra in PRECISIONS.items():
        result = run_scenario(scenario, str(tmp_path / name), trainer=extra())
        found[name] = {d.code for d in result.diagnoses}
        if scenario == "nan_in_batch":
            assert result.diagnoses[0].evidence["first_step"] == 60
    # Skipped fp16 steps change the trajectory a little (and the order of findings), not the findings.
    assert found["bf16-mixed"] == found["32-true"] == found["16-mixed+GradScaler"] != set()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_healthy_run_stays_quiet_in_every_precision(tmp_path: Path, precision: str) -> None:
    result = run_scenario("adam_regression", str(tmp_path), trainer={**PRECISIONS[precision](), "max_epochs": 2})
    assert result.alarms == []


def test_gradscaler_skips_happened_and_were_not_reported(tmp_path: Path) -> None:
    extra = fp16_with_scaler()
    scaler = extra["plugins"][0].scaler
    result = run_scenario("adam_regression", str(tmp_path), trainer={**extra, "max_epochs": 2})
    assert scaler.get_scale() < 2.0**24  # the scale went down: steps were skipped
    assert result.alarms == []


def test_a_collapsing_loss_scale_is_reported(tmp_path: Path) -> None:
    run = build("adam_regression")
    data_loss = run.module.loss_fn
    # A loss 1e8 times too large overflows float16 at any useful scale: step after step is skipped.
    run.module.loss_fn = lambda m, p, y, i: data_loss(m, p, y, i) * 1e8
    guard = LossGuard(report_every=10, verbose=False)
    trainer(tmp_path, [guard], max_steps=100, **fp16_with_scaler(2.0**16)).fit(run.module, run.train)
    first = guard.diagnoses[0]
    assert first.code == "nonfinite_gradients" and first.severity == "error"
    assert first.evidence["loss_scale"] < 1.0
    assert "collapsed" in first.message or "consecutive" in first.message
