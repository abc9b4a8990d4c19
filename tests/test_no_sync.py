"""The per-step path never reads a tensor back to the host: counted, in real fits.

Every host read a tensor offers (``.item()``, ``float(t)``, ``bool(t)``, ``.cpu()``, ``.tolist()``, ...)
is wrapped; a read whose call stack passes through LossGuard is attributed to the report path when it
happens under ``LossGuard._report`` / ``on_validation_end`` / end of fit, and to the per-step path
otherwise. The per-step count must be zero; the report count must not (the test would be vacuous).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_lossguard
from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from lightning_lossguard.signals.losses import LossProbe
from tests.conftest import trainer

HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__format__")
PACKAGE = str(Path(lightning_lossguard.__file__).parent)
REPORT_PATHS = {
    LossGuard._report.__code__,
    LossGuard.on_validation_end.__code__,
    LossGuard._finish.__code__,
    LossGuard.on_exception.__code__,
}


class ReadCounter:
    def __init__(self) -> None:
        self.on_report = 0
        self.per_step: list[str] = []

    def wrap(self, name: str, original: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            ours = None
            while frame is not None:
                if frame.f_code in REPORT_PATHS:
                    self.on_report += 1
                    break
                if ours is None and frame.f_code.co_filename.startswith(PACKAGE):
                    ours = f"{name} in {frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})"
                frame = frame.f_back
            else:
                if ours is not None:
                    self.per_step.append(ours)
            return original(tensor, *args, **kwargs)

        return counted


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReadCounter]:
    counter = ReadCounter()
    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    yield counter


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
    original = LossProbe.record

    def syncing(self: LossProbe, loss: torch.Tensor, terms: Any) -> None:
        loss.item()  # the kind of bug this test exists for
        original(self, loss, terms)

    monkeypatch.setattr(LossProbe, "record", syncing)
    run = build("adam_regression")
    trainer(tmp_path, [LossGuard(report_every=25, verbose=False)], max_steps=30).fit(run.module, run.train)
    assert reads.per_step and reads.per_step[0].startswith("item in record_loss")  # attributed to its caller
