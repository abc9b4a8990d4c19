"""CUDA-only checks (skipped without a GPU): no device synchronisation on the per-step path, and CUDA-event
timings that agree with a synchronised reference."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from lightning_lossguard.signals.clock import CudaEventClock
from tests.conftest import trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PER_STEP_HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step")


@pytest.fixture
def restore_sync_mode() -> Iterator[None]:
    yield
    torch.cuda.set_sync_debug_mode("default")


def strict(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Run a hook with CUDA's sync debug mode set to raise on any synchronising call."""

    def run(*args: Any, **kwargs: Any) -> Any:
        torch.cuda.set_sync_debug_mode("error")
        try:
            return hook(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    return run


def test_per_step_hooks_never_synchronise(tmp_path: Path, restore_sync_mode: None) -> None:
    run = build("l2_weight_10")  # loss terms too
    guard = LossGuard(report_every=25, verbose=False)
    for name in PER_STEP_HOOKS:
        setattr(guard, name, strict(getattr(guard, name)))
    end = guard.on_train_batch_end

    def batch_end(trainer_: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The report step may read back; every other batch end must not.
        due = guard._batches_since_report + 1 >= guard._report_batches
        (end if due else strict(end))(trainer_, module, outputs, batch, batch_idx)

    guard.on_train_batch_end = batch_end  # type: ignore[method-assign]
    trainer(tmp_path, [guard], accelerator="gpu", devices=1, max_steps=100).fit(run.module, run.train)
    assert guard.diagnoses and guard._diagnostician.steps_judged == 100


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
