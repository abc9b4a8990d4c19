"""Tabular regression with the schedule a lot of tabular code uses: AdamW under ``ReduceLROnPlateau`` on the
validation loss (factor 0.5, patience 3), ``EarlyStopping`` (patience 12) and a ``ModelCheckpoint`` on the same metric,
an MLP with SiLU activations on standardised features and an MSE loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run


class TabularMLP(L.LightningModule):
    def __init__(self, features: int = 16, hidden: int = 64, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        prediction = self(x)
        self.log_dict({"val_loss": F.mse_loss(prediction, y), "val_mae": F.l1_loss(prediction, y)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        TabularMLP(),
        loader(regression(800, noise=0.3, seed=seed), 64, seed=seed),
        loader(regression(800, noise=0.3, seed=seed + 100), 400, shuffle=False),
        trainer={
            "max_epochs": 80,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_loss", mode="min", patience=12),
                ModelCheckpoint(monitor="val_loss", mode="min"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "tabular_plateau_early_stopped_h",
        "tabular regression",
        "an MLP regressor under AdamW with ReduceLROnPlateau on the validation loss, EarlyStopping (patience 12) and a "
        "best checkpoint on the same metric",
        _build,
        faults=("lr_x1000", "exp_output", "lr_div_1e6"),
        output_module="head",
    )
]
