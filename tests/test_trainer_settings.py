"""What LossGuard reads off the Trainer before the first batch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import GradientAccumulationScheduler
from lightning.pytorch.demos.boring_classes import BoringModel

from lightning_lossguard.trainer_settings import accumulation, run_settings


def test_the_accumulation_of_the_first_epoch_comes_from_a_scheduler_before_it_sets_the_trainers(
    tmp_path: Path,
) -> None:
    plain = L.Trainer(default_root_dir=tmp_path, accumulate_grad_batches=3, logger=False)
    scheduled = L.Trainer(
        default_root_dir=tmp_path, callbacks=[GradientAccumulationScheduler({0: 8, 2: 1})], logger=False
    )
    model = BoringModel()
    assert accumulation(plain, model) == 3
    assert scheduled.accumulate_grad_batches == 1 and accumulation(scheduled, model) == 8
    model.automatic_optimization = False
    assert accumulation(plain, model) == 1  # manual optimization steps when it likes
    assert run_settings(plain).accumulate == 3
