"""What LossGuard reads off the Trainer before the first batch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import GradientAccumulationScheduler
from lightning.pytorch.demos.boring_classes import BoringModel

from lightning_lossguard.trainer_settings import accumulation, default_report_every, run_settings


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


def test_the_default_report_interval_follows_log_every_n_steps_but_never_below_10(tmp_path: Path) -> None:
    def every(**kwargs: object) -> int:
        trainer = L.Trainer(default_root_dir=tmp_path, logger=False, max_steps=5000, **kwargs)  # type: ignore[arg-type]
        return default_report_every(trainer)

    assert every(log_every_n_steps=50) == 50
    assert every(log_every_n_steps=1) == every(log_every_n_steps=5) == 10  # Lightning asks short epochs to lower it
