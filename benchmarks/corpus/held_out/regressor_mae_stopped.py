"""Tabular regression selected on its mean absolute error, as forecasting and pricing code often is: an MLP trained
on the mean squared error, the validation MSE logged as ``val_loss`` and a torchmetrics ``MeanAbsoluteError`` as
``val_mae``; early stopping and the best checkpoint watch ``val_mae`` (patience 6, ``min_delta`` 1e-3). AdamW 3e-3
with a cosine schedule over the planned 40 epochs, batches of 128."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanAbsoluteError

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run

EPOCHS = 40


class MaeSelectedRegressor(L.LightningModule):
    def __init__(self, dim: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.out = nn.Linear(hidden, 1)
        self.val_mae = MeanAbsoluteError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        prediction = self(x)
        self.val_mae.update(prediction, y)
        self.log("val_loss", F.mse_loss(prediction, y))
        self.log("val_mae", self.val_mae, on_epoch=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=1e-2)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        MaeSelectedRegressor(),
        loader(regression(2048, seed=seed), batch_size=128, seed=seed),
        loader(regression(512, seed=seed + 100), batch_size=256, shuffle=False),
        trainer={
            "max_epochs": EPOCHS,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_mae", mode="min", min_delta=1e-3, patience=6),
                ModelCheckpoint(monitor="val_mae", mode="min"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "mlp_val_mae_stopped_h",
        "tabular regression",
        "an MLP trained on the MSE, validated by MSE (val_loss) and a torchmetrics mean absolute error (val_mae), "
        "early stopping and the best checkpoint on val_mae (patience 6, min_delta 1e-3), AdamW 3e-3 with a cosine "
        "schedule",
        _build,
        faults=("frozen", "lr_div_1e6", "lr_x1000"),
    )
]
