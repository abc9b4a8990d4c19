"""A regressor that keeps an exponential moving average of its weights with ``torch.optim.swa_utils.AveragedModel``
(``get_ema_multi_avg_fn(0.99)``, ``use_buffers=True``), updated in ``on_train_batch_end`` and used for validation, as
code that evaluates an EMA of the weights does. The averaged copy is a submodule without a gradient: it is not in the
optimizer. An MLP with dropout and BatchNorm, MSE, Adam with cosine annealing per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run

DIM, EPOCHS, BATCH = 16, 5, 64


class EMARegressor(L.LightningModule):
    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(DIM, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, 1),
        )
        self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=True)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.update_parameters(self.net)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log_dict({"val_loss": F.mse_loss(self.ema(x), y), "val_loss_raw": F.mse_loss(self.net(x), y)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)]


def _build(seed: int) -> Run:
    return Run(
        EMARegressor(),
        loader(regression(4096, dim=DIM, noise=0.3, seed=seed), BATCH, seed=seed),
        loader(regression(1024, dim=DIM, noise=0.3, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "ema_averaged_model_regressor_h",
        "tabular regression",
        "an MLP regressor with an AveragedModel EMA of its weights updated each batch and used for validation (not in "
        "the optimizer), Adam with per-epoch cosine annealing",
        _build,
        # frozen would leave only the EMA copy's last bias trainable, which the loss never reaches: backward raises.
        faults=("lr_x1000", "no_zero_grad", "lr_div_1e6"),
    )
]
