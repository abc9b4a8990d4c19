"""What LossGuard reads off the Trainer before the first batch."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import GradientAccumulationScheduler
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_lossguard import LossGuard
from lightning_lossguard.detectors.stopped_early import EarlyStop
from lightning_lossguard.detectors.val_loss_rising import ModelSelection
from lightning_lossguard.trainer_settings import (
    accumulation,
    batches_done_in_epoch,
    batches_left,
    checkpointed_metrics,
    default_report_every,
    early_stopping_metrics,
    learning_rates,
    model_selection,
    run_settings,
    step_counter,
    stopped_early,
)
from tests.conftest import trainer as quiet_trainer


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
    def every(planned_batches: int = 5000, accumulate: int = 1, **kwargs: object) -> int:
        trainer = L.Trainer(default_root_dir=tmp_path, logger=False, **kwargs)  # type: ignore[arg-type]
        return default_report_every(trainer, planned_batches, accumulate)

    assert every(log_every_n_steps=50) == 50
    assert every(log_every_n_steps=1) == every(log_every_n_steps=5) == 10  # Lightning asks short epochs to lower it
    # A short run gets MIN_REPORTS reports, its steps counted at the first epoch's accumulation.
    assert every(planned_batches=600) == 30 and every(planned_batches=2400, accumulate=4) == 30
    assert every(planned_batches=0) == 50  # unknown length


class _BatchesLeft(L.Callback):
    """``batches_left`` at the fit's start (the scheduler asked) and at each epoch's start (the trainer's factor)."""

    def __init__(self) -> None:
        self.seen: list[int | None] = []

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seen.append(batches_left(trainer, accumulation(trainer, module)))

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seen.append(batches_left(trainer, int(trainer.accumulate_grad_batches)))


def test_the_batches_left_are_counted_in_batches_whatever_the_accumulation(tmp_path: Path) -> None:
    # BoringModel: 64 batches an epoch. Lightning's step estimate at the start counts one batch a step (192 here),
    # before the scheduler sets its factor: times the factor, the run was 4x longer than it is.
    by_epochs = _BatchesLeft()
    scheduled = GradientAccumulationScheduler({0: 4, 1: 2})
    quiet_trainer(tmp_path, [scheduled, by_epochs], max_epochs=3).fit(BoringModel())
    assert by_epochs.seen == [192, 192, 128, 64]
    # max_steps ends it first: 20 steps, 16 of 4 batches in the first epoch, then 4 of 2.
    by_steps = _BatchesLeft()
    scheduled = GradientAccumulationScheduler({0: 4, 1: 2})
    quiet_trainer(tmp_path, [scheduled, by_steps], max_steps=20).fit(BoringModel())
    assert by_steps.seen == [80, 80, 8]


class _StepsSeen(L.Callback):
    """At every batch start and end: the counter's value and the trainer's global step."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        counter = step_counter(trainer)
        self.seen.append((counter.completed if counter is not None else -1, trainer.global_step))

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.on_train_batch_start(trainer)


class _TwoSteps(BoringModel):
    """Manual optimization, two optimizer steps in every batch: the global step moves by 2 per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        first, second = self.optimizers()  # type: ignore[misc]
        for optimizer in (first, second):
            optimizer.zero_grad()
            self.manual_backward(self.step(batch))
            optimizer.step()

    def configure_optimizers(self) -> Any:
        return [torch.optim.SGD(self.layer.parameters(), lr=0.1) for _ in range(2)]


def test_the_step_counter_reads_the_global_step_in_automatic_and_manual_optimization(tmp_path: Path) -> None:
    for model, accumulate in ((BoringModel(), 3), (_TwoSteps(), 1)):
        seen = _StepsSeen()
        quiet_trainer(tmp_path, [seen], logger=False, max_steps=12, accumulate_grad_batches=accumulate).fit(model)
        assert seen.seen and all(counter == step for counter, step in seen.seen)
        assert len({step for _, step in seen.seen}) > 4  # it moved: accumulation's lag and two steps a batch


class _LeftInManual(L.Callback):
    """``batches_left`` at the fit's start, and after the 10th batch as guessed and at 1.25 steps a batch."""

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.at_start = batches_left(trainer, 1)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if trainer.current_epoch == 0 and trainer.fit_loop.epoch_loop.batch_idx == 9:
            done = batches_done_in_epoch(trainer)
            assert done is not None
            self.after_ten = done, batches_left(trainer, 1, done), batches_left(trainer, 1, done, 1.25)


def test_the_batches_left_in_manual_optimization_count_every_optimizers_steps(tmp_path: Path) -> None:
    # Two optimizers: global_step moves 2 a batch, so max_steps=100 ends the fit at batch 50 (not 100).
    by_steps = _LeftInManual()
    quiet_trainer(tmp_path, [by_steps], logger=False, max_steps=100).fit(_TwoSteps())
    assert by_steps.at_start == 50
    # After 10 batches (20 steps): 40 more at 2 steps a batch; 64 at a measured 1.25 (a critic stepping each batch,
    # a generator every 4th).
    assert by_steps.after_ten == (10, 40, 64)
    # By epochs (64 batches each), the batches done in this one are left out; the steps a batch take play no part.
    by_epochs = _LeftInManual()
    quiet_trainer(tmp_path, [by_epochs], logger=False, max_epochs=2).fit(_TwoSteps())
    assert by_epochs.at_start == 128 and by_epochs.after_ten == (10, 118, 118)


def test_without_lightnings_loops_there_is_no_step_counter() -> None:
    assert step_counter(SimpleNamespace(global_step=3)) is None  # type: ignore[arg-type]


class _SettingsSeen(L.Callback):
    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.settings = run_settings(trainer)


def test_the_batches_per_epoch_tell_full_batch_training_apart(tmp_path: Path) -> None:
    # One batch an epoch means every step sees the same data: loss_plateau does not read a constant loss there.
    seen = []
    for limit in (None, 1):
        callback = _SettingsSeen()
        quiet_trainer(tmp_path, [callback], logger=False, max_steps=2, limit_train_batches=limit).fit(BoringModel())
        seen.append(callback.settings.batches_per_epoch)
    assert seen == [64, 1]


def test_clipping_by_norm_and_by_value_are_told_apart(tmp_path: Path) -> None:
    seen = []
    for algorithm in ("norm", "value"):
        callback = _SettingsSeen()
        quiet_trainer(
            tmp_path, [callback], logger=False, max_steps=2, gradient_clip_val=0.5, gradient_clip_algorithm=algorithm
        ).fit(BoringModel())
        seen.append((callback.settings.clip_val, callback.settings.clip_value))
    assert seen == [(0.5, None), (None, 0.5)]


def test_the_learning_rates_are_the_largest_and_the_smallest_of_the_first_optimizers_groups() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    groups = [{"params": net[0].parameters(), "lr": 1e-5}, {"params": net[1].parameters(), "lr": 1e-3}]
    trainer = SimpleNamespace(optimizers=[torch.optim.SGD(groups)])
    assert learning_rates(trainer) == (1e-3, 1e-5)  # type: ignore[arg-type]
    tensor_lr = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[{"lr": torch.tensor(0.1)}])])
    assert all(math.isnan(r) for r in learning_rates(tensor_lr))  # type: ignore[arg-type]  # no sync for it
    assert all(math.isnan(r) for r in learning_rates(SimpleNamespace(optimizers=[])))  # type: ignore[arg-type]


def test_weights_stored_in_16_bits_are_read_from_the_precision_the_run_trains_in(tmp_path: Path) -> None:
    seen = []
    for precision in ("bf16-true", "bf16-mixed", "32-true"):
        callback = _SettingsSeen()
        quiet_trainer(tmp_path, [callback], logger=False, max_steps=2, precision=precision).fit(BoringModel())
        seen.append(callback.settings.weight_dtype)
    assert seen == ["bfloat16", "", ""]


def test_the_report_goes_beside_the_tensorboard_events_whatever_the_loggers_order_and_csv_alone_is_told(
    tmp_path: Path,
) -> None:
    # Each logger picks its own version folder: the CSV logger, first, takes version_0 and Lightning's log_dir is
    # its folder; the LossGuard tab reads the report beside the TensorBoard events, in version_1.
    for loggers in ("csv_first", "tensorboard_first", "csv_only"):
        root = tmp_path / loggers
        csv, tensorboard = CSVLogger(str(root)), TensorBoardLogger(str(root))
        chosen = {"csv_first": [csv, tensorboard], "tensorboard_first": [tensorboard, csv], "csv_only": [csv]}[loggers]
        guard = LossGuard(verbose=False)
        quiet_trainer(root, [guard], logger=chosen, max_steps=5).fit(BoringModel())
        expected = tensorboard.log_dir if tensorboard in chosen else csv.log_dir
        assert guard.report_path == str(Path(expected) / "lossguard.json"), loggers
        assert Path(guard.report_path).is_file()
        if tensorboard in chosen:
            assert list(Path(expected).glob("events.out.tfevents.*")), loggers
        # Without a TensorBoard logger nothing takes the diagnoses' text: the run says where they are.
        told = [note for note in guard.notes if note.startswith("No TensorBoard logger (CSVLogger)")]
        assert len(told) == (tensorboard not in chosen), (loggers, guard.notes)
    assert Path(csv.log_dir).name == "version_0"


def test_how_the_run_keeps_its_best_model_is_read_per_metric_from_either_package(tmp_path: Path) -> None:
    import pytorch_lightning
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    callbacks = [
        ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", mode="min"),
        ModelCheckpoint(dirpath=tmp_path, monitor="val_acc", mode="max"),  # the highest: not a loss's best
        ModelCheckpoint(dirpath=tmp_path, monitor="val_mae", mode="min", save_top_k=0),  # keeps none
        EarlyStopping(monitor="val_loss", mode="min", patience=7),
        EarlyStopping(monitor="val_nll", mode="min", patience=4),
    ]
    t = quiet_trainer(tmp_path, callbacks, enable_checkpointing=True)
    assert model_selection(t) == {
        "val_loss": ModelSelection(best_kept=True, stops_after=7),
        "val_nll": ModelSelection(best_kept=False, stops_after=4),
    }
    standalone = pytorch_lightning.callbacks
    t = quiet_trainer(
        tmp_path,
        [standalone.ModelCheckpoint(dirpath=tmp_path, monitor="val_loss"), standalone.EarlyStopping("val_loss")],
        standalone=True,
        enable_checkpointing=True,
    )
    assert model_selection(t) == {"val_loss": ModelSelection(best_kept=True, stops_after=3)}
    assert model_selection(quiet_trainer(tmp_path, [], enable_checkpointing=True)) == {}  # the default: the last
    t = quiet_trainer(tmp_path, callbacks, enable_checkpointing=True)
    assert checkpointed_metrics(t) == ["val_loss", "val_acc"]  # either mode; the one keeping none left out
    assert checkpointed_metrics(quiet_trainer(tmp_path, [], enable_checkpointing=True)) == []


def test_an_early_stopping_that_ran_out_of_patience_is_read_with_its_patience(tmp_path: Path) -> None:
    import pytorch_lightning
    from lightning.pytorch.callbacks import EarlyStopping

    out_of_patience = EarlyStopping(monitor="val_loss", mode="min", patience=5)
    out_of_patience.wait_count = 5
    waiting = EarlyStopping(monitor="val_nll", mode="min", patience=5)
    waiting.wait_count = 4
    highest = EarlyStopping(monitor="val_acc", mode="max", patience=2)  # waiting for a new highest
    highest.wait_count = 2
    t = quiet_trainer(tmp_path, [out_of_patience, waiting, highest])
    assert stopped_early(t) == {"val_loss": EarlyStop(5), "val_acc": EarlyStop(2, higher_is_better=True)}
    assert early_stopping_metrics(t) == ["val_loss", "val_nll", "val_acc"]  # kept whether or not they stopped
    standalone = pytorch_lightning.callbacks.EarlyStopping("val_loss", patience=3)
    standalone.wait_count = 3
    assert stopped_early(quiet_trainer(tmp_path, [standalone], standalone=True)) == {"val_loss": EarlyStop(3)}
    assert stopped_early(quiet_trainer(tmp_path, [])) == {}
