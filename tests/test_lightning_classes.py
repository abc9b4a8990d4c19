"""LossGuard on a Trainer of the standalone ``pytorch_lightning`` package (``import pytorch_lightning as pl``).

Much public Lightning code imports the standalone package rather than ``lightning.pytorch``. Its classes are
copies, not the same objects: a ``pytorch_lightning`` TensorBoard logger, GradScaler plugin, accumulation
scheduler, pruning callback or wrapped optimizer is not an instance of its ``lightning.pytorch`` twin, and its
``LightningCLI`` takes only subclasses of its own ``Callback``. Each test here is a real fit on the standalone
package, and each failed while LossGuard knew the ``lightning.pytorch`` classes only.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import GradientAccumulationScheduler, ModelPruning
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn
from torch.nn import functional as F

from benchmarks.fault_zoo.scenarios import loader, regression_data
from lightning_lossguard import LossGuard
from lightning_lossguard.lightning_classes import lightning_classes
from lightning_lossguard.trainer_settings import accumulation
from tests.conftest import events, text_of, trainer


class Regressor(pl.LightningModule):
    """A small regression on the standalone package; ``clip`` makes it optimize by hand and clip at 1e-3."""

    def __init__(self, lr: float = 0.05, clip: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
        self.lr = lr
        self.automatic_optimization = not clip
        self.norms: list[float] = []  # by hand: the unclipped norms, as the module saw them

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()  # pytorch_lightning's LightningOptimizer
        opt.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(10 * loss)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        self.clip_gradients(opt, gradient_clip_val=1e-3, gradient_clip_algorithm="norm")  # type: ignore[arg-type]
        opt.step()  # type: ignore[union-attr]
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> Any:  # for the LightningCLI run
        return loader(regression_data(512))


def alarms(guard: LossGuard) -> list[str]:
    return [d.one_line() for d in guard.diagnoses if d.severity != "info"]


def test_the_classes_of_both_packages_are_known() -> None:
    import lightning.pytorch.loggers

    assert lightning_classes(lightning.pytorch.loggers.TensorBoardLogger) == (
        lightning.pytorch.loggers.TensorBoardLogger,
        TensorBoardLogger,
    )


@pytest.mark.parametrize("lr", [0.05, 3.0])
def test_diagnoses_reach_the_tensorboard_of_a_standalone_run(tmp_path: Path, lr: float) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    run = trainer(tmp_path, [guard], standalone=True, max_steps=150)
    run.fit(Regressor(lr=lr), loader(regression_data()))
    found = events(run.logger.log_dir)  # type: ignore[union-attr]
    report = text_of(found, "lossguard/diagnoses/text_summary")
    assert found.Tensors("custom_scalars__config__"), "the dashboard's layout was not written"
    if lr < 1:  # healthy: quiet, and TensorBoard says so
        assert alarms(guard) == []
        assert report and "found nothing wrong" in report[-1], report[-1:]
    else:  # SGD at 3.0 on this regression diverges: an error, in TensorBoard too
        assert any(d.severity == "error" for d in guard.diagnoses), alarms(guard)
        assert report and guard.diagnoses[0].code in report[-1]


def test_a_standalone_gradscalers_skipped_steps_are_not_alarms(tmp_path: Path) -> None:
    # A real float16 GradScaler on CPU: its first steps overflow at 2**24 and are skipped while the scale searches
    # down. Taken for LossGuard's own, its infinite gradients are the scaler at work, not a fault.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    guard = LossGuard(report_every=10, verbose=False)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer(tmp_path, [guard], standalone=True, max_steps=120, plugins=[plugin]).fit(
        Regressor(lr=0.05), loader(regression_data())
    )
    assert scaler.get_scale() < 2.0**24  # steps were skipped
    assert alarms(guard) == []


def test_the_accumulation_of_a_standalone_scheduler_is_read(tmp_path: Path) -> None:
    scheduler = GradientAccumulationScheduler({0: 8, 2: 1})
    run = trainer(tmp_path, [scheduler], logger=False, standalone=True)
    assert accumulation(run, Regressor()) == 8  # type: ignore[arg-type]


def test_weights_that_standalone_pruning_masks_are_followed(tmp_path: Path) -> None:
    guard = LossGuard(verbose=False)
    pruning = ModelPruning("l1_unstructured", amount=0.5, verbose=0)
    trainer(tmp_path, [pruning, guard], standalone=True, max_epochs=6, log_every_n_steps=50).fit(
        Regressor(lr=0.01), loader(regression_data())
    )
    # Half of the remaining weights are masked at each epoch's end: taken for dead units, a warning by the 6th.
    assert alarms(guard) == []
    assert any("pruned parameters" in note for note in guard.notes), guard.notes


def test_a_standalone_optimizer_clipped_by_hand_is_read_before_clipping(tmp_path: Path) -> None:
    module = Regressor(lr=0.01, clip=True)
    guard = LossGuard(report_every=5, budget=None, verbose=False)
    run = trainer(tmp_path, [guard], standalone=True, max_steps=30)
    run.fit(module, loader(regression_data()))
    logged = [e.value for e in events(run.logger.log_dir).Scalars("lossguard/grad_norm")]  # type: ignore[union-attr]
    # One point per report, the median of its 5 steps: the unclipped norms (after clipping they would be 1e-3).
    assert logged == pytest.approx([statistics.median(module.norms[i : i + 5]) for i in range(0, 30, 5)], rel=1e-4)


CLI_CONFIG = """\
model:
  lr: 3.0
trainer:
  max_steps: 60
  accelerator: cpu
  devices: 1
  default_root_dir: {root}
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  callbacks:
    - class_path: lightning_lossguard.LossGuard
      init_args:
        report_every: 10
        verbose: false
"""


def test_the_standalone_lightning_cli_takes_lossguard_from_its_yaml(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CLI_CONFIG.format(root=json.dumps(str(tmp_path))))
    cli = LightningCLI(Regressor, args=["fit", "--config", str(config)], save_config_kwargs={"overwrite": True})
    [guard] = [c for c in cli.trainer.callbacks if isinstance(c, LossGuard)]  # type: ignore[attr-defined]
    assert guard.report_every == 10 and guard.verbose is False
    assert any(d.severity == "error" for d in guard.diagnoses), alarms(guard)  # SGD at 3.0 diverges
    assert guard.report_path is not None and Path(guard.report_path).is_file()
