"""CUDA-only checks (skipped without a GPU): no device synchronisation on the per-step path, under every
precision and with accumulation, clipping, validation, output checks, logged loss terms and manual optimization;
the same findings as on the CPU; GradScaler skips left quiet; CUDA-event timings that agree with a synchronised
reference.

Synchronisations are counted as the CPU tests count host reads (:class:`tests.conftest.ReadCounter`): CUDA's
sync debug mode warns at every synchronising call, and the warning's call stack says whose call it was.
Lightning's and the GradScaler's own synchronisations have no LossGuard frame on their stack.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.nn import functional as F

from benchmarks import overhead
from benchmarks.fault_zoo.run import run_scenario
from benchmarks.fault_zoo.scenarios import build, loader, regression_data
from lightning_lossguard import LossGuard, OutputMonitor
from lightning_lossguard.signals.clock import CudaEventClock
from tests.conftest import ReadCounter, plant_a_per_step_read, trainer
from tests.signals.test_clipping import ManualClipping

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = {"accelerator": "gpu", "devices": 1}
SYNC_WARNING = "synchronizing CUDA operation"  # what torch.cuda.set_sync_debug_mode("warn") says


@pytest.fixture
def syncs() -> Iterator[ReadCounter]:
    """Every synchronising CUDA call, attributed by its call stack (see :class:`ReadCounter`)."""
    counter = ReadCounter()
    with warnings.catch_warnings():
        warnings.simplefilter("always")

        def show(message: Any, *args: Any, **kwargs: Any) -> None:
            if SYNC_WARNING in str(message):
                counter.attribute("sync", sys._getframe(1))

        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counter
        finally:
            torch.cuda.set_sync_debug_mode("default")


SYNC_RUNS: dict[str, tuple[str, dict[str, Any], Callable[[], dict[str, Any]]]] = {
    # name: (zoo scenario, trainer arguments, LossGuard arguments)
    "32-true, loss terms, gradients on every step": ("l2_weight_10", {}, lambda: {"budget": None}),
    "16-mixed GradScaler, accumulation 3, clipping, validation": (
        "adam_regression",
        {"precision": "16-mixed", "accumulate_grad_batches": 3, "gradient_clip_val": 1.0},
        dict,
    ),
    "bf16-mixed, outputs watched": (
        "adam_regression",
        {"precision": "bf16-mixed"},
        lambda: {"monitors": [OutputMonitor()]},
    ),
    "lossguard.timed sections": ("slowing_history", {}, dict),
}


@pytest.mark.parametrize("name", SYNC_RUNS)
def test_per_step_path_never_synchronises(tmp_path: Path, syncs: ReadCounter, name: str) -> None:
    scenario, extra, guard_args = SYNC_RUNS[name]
    run = build(scenario)
    guard = LossGuard(report_every=25, verbose=False, **guard_args())
    args = {**run.trainer, **GPU, "max_steps": 100, "max_epochs": 2, **extra}
    trainer(tmp_path, [guard], **args).fit(run.module, run.train, run.val)
    assert syncs.per_step == []
    assert syncs.on_report > 0  # the reports' reads were seen: the count is not vacuous
    assert guard._diagnostician.steps_judged > 0


def test_manual_optimization_never_synchronises(tmp_path: Path, syncs: ReadCounter) -> None:
    guard = LossGuard(report_every=5, budget=None, verbose=False)
    trainer(tmp_path, [guard], max_steps=30, **GPU).fit(ManualClipping(), loader(regression_data()))
    assert syncs.per_step == []
    assert syncs.on_report > 0


class LogsItsTerms(L.LightningModule):
    """Returns only the total and logs its two terms with ``self.log_dict``, as most multi-term code does."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.net(x)
        fit, size = F.mse_loss(out, y), 1e-2 * out.pow(2).mean()
        self.log_dict({"train_fit": fit, "train_size": size})
        return fit + size

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_logged_terms_are_kept_on_the_device_and_read_with_the_report(tmp_path: Path, syncs: ReadCounter) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    trainer(tmp_path, [guard], max_steps=60, **GPU).fit(LogsItsTerms(), loader(regression_data()))
    assert syncs.per_step == []
    assert syncs.on_report > 0
    assert set(guard._diagnostician.logged_terms.weights) == {"train_fit", "train_size"}  # read back and matched


def test_the_counter_catches_a_per_step_sync(
    tmp_path: Path, syncs: ReadCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_a_per_step_read(monkeypatch)
    run = build("adam_regression")
    trainer(tmp_path, [LossGuard(report_every=25, verbose=False)], max_steps=30, **GPU).fit(run.module, run.train)
    assert syncs.per_step and syncs.per_step[0].startswith("sync in record_loss")


@pytest.mark.parametrize("scenario", ["nan_in_batch", "lr_too_high_sgd"])
def test_same_findings_on_cuda_as_on_cpu(tmp_path: Path, scenario: str) -> None:
    on_cpu = run_scenario(scenario, str(tmp_path / "cpu"))
    found = {str(d.code) for d in on_cpu.diagnoses}
    for precision in ("32-true", "16-mixed"):
        on_gpu = run_scenario(scenario, str(tmp_path / precision), trainer={**GPU, "precision": precision})
        assert {str(d.code) for d in on_gpu.diagnoses} == found != set()
        if scenario == "nan_in_batch":
            assert on_gpu.diagnoses[0].evidence["first_step"] == 60


def test_gradscaler_skips_on_cuda_stay_quiet(tmp_path: Path) -> None:
    # Starting at 2**24, the scale overflows float16 and searches down: the first steps are skipped.
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**24)
    extra = {**GPU, "plugins": [MixedPrecision("16-mixed", "cuda", scaler=scaler)], "max_epochs": 2}
    result = run_scenario("adam_regression", str(tmp_path), trainer=extra)
    assert scaler.get_scale() < 2.0**24  # steps were skipped
    assert result.alarms == []


def test_the_overhead_benchmark_runs_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overhead.DEVICE, "name", "cuda")
    tables = overhead.run(repeats=1, quick=True, log=lambda _: None)
    per_step, kinds = tables.split("\n\n")
    assert "wall, synchronised" in per_step
    assert len(per_step.splitlines()) == 2 + len(overhead.CUDA_WORKLOADS)
    assert len(kinds.splitlines()) == 2 + len(overhead.CUDA_KIND_RUNS)


def test_cuda_event_timings_agree_with_a_synchronised_reference() -> None:
    a = torch.randn(2048, 2048, device="cuda")
    clock = CudaEventClock()
    for _ in range(3):
        a @ a  # warm up
    torch.cuda.synchronize()
    start = clock.mark()
    for _ in range(20):
        a @ a
    end = clock.mark()
    measured = clock.elapsed_ms(start, end)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    reference = (time.perf_counter() - t0) * 1e3
    assert measured == pytest.approx(reference, rel=0.25, abs=0.5)
