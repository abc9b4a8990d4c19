"""The per-step path never reads a tensor back to the host: counted, in real fits.

Every host read a tensor offers (``.item()``, ``float(t)``, ``bool(t)``, ``.cpu()``, ``.tolist()``, ...)
is wrapped; a read whose call stack passes through LossGuard is attributed to the report path when it
happens under ``LossGuard._report`` / ``on_validation_end`` / end of fit, and to the per-step path
otherwise. The per-step count must be zero; the report count must not (the test would be vacuous).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from tests.conftest import ReadCounter, plant_a_per_step_read, trainer


@pytest.mark.parametrize(
    ("scenario", "extra"),
    [
        ("adam_regression", {}),  # with validation
        (
            "l2_weight_10",
            {"accumulate_grad_batches": 3, "gradient_clip_val": 1.0},
        ),  # loss terms, accumulation
        ("bf16_mixed", {}),
        ("slowing_history", {}),  # lossguard.timed sections
    ],
)
def test_no_host_read_outside_report_steps(
    tmp_path: Path, reads: ReadCounter, scenario: str, extra: dict[str, Any]
) -> None:
    run = build(scenario)
    guard = LossGuard(report_every=25, verbose=False)
    trainer(tmp_path, [guard], **{**run.trainer, "max_steps": 100, "max_epochs": 2, **extra}).fit(
        run.module, run.train, run.val
    )
    assert reads.per_step == []
    assert reads.on_report > 0


def test_the_counter_catches_a_per_step_read(
    tmp_path: Path, reads: ReadCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_a_per_step_read(monkeypatch)
    run = build("adam_regression")
    trainer(tmp_path, [LossGuard(report_every=25, verbose=False)], max_steps=30).fit(run.module, run.train)
    assert reads.per_step and reads.per_step[0].startswith("item in record_loss")  # attributed to its caller


class DeepNarrow(L.LightningModule):
    """Many small parameters of one shape: on a CPU their gradient norms are taken by stacks."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(12)])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_no_host_read_outside_report_steps_when_norms_are_stacked(tmp_path: Path, reads: ReadCounter) -> None:
    guard = LossGuard(report_every=25, verbose=False)
    loader = DataLoader(TensorDataset(torch.randn(256, 8)), batch_size=16)
    trainer(tmp_path, [guard], max_steps=100).fit(DeepNarrow(), loader)
    assert guard._recorder is not None and any(guard._recorder.gradients._stacked.values())
    assert reads.per_step == []
    assert reads.on_report > 0


class HeadOnlyOptimized(DeepNarrow):
    """Its optimizer holds the last layer only: the rest gets gradients that LossGuard compares on reports."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net[-1].parameters(), lr=0.05)


def test_no_host_read_outside_report_steps_with_parameters_no_optimizer_holds(
    tmp_path: Path, reads: ReadCounter
) -> None:
    guard = LossGuard(report_every=25, verbose=False)
    loader = DataLoader(TensorDataset(torch.randn(256, 8)), batch_size=16)
    trainer(tmp_path, [guard], max_steps=100).fit(HeadOnlyOptimized(), loader)
    assert [d.subject for d in guard.diagnoses if d.code == "tiny_updates"] == ["left out of the optimizer"]
    assert reads.per_step == []
    assert reads.on_report > 0
