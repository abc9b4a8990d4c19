"""Tabular regression: the MLP every tutorial starts with."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run


class TabularRegressor(L.LightningModule):
    """Linear-ReLU stack with dropout, Adam with weight decay, validation MSE logged per epoch."""

    def __init__(self, dim: int = 16, hidden: int = 64, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        pred = self(x)
        loss = F.mse_loss(pred, y)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": pred, "target": y}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)


def _build(seed: int) -> Run:
    return Run(
        TabularRegressor(),
        loader(regression(2048, seed=seed), 64, seed=seed),
        loader(regression(512, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "tabular_mlp",
        "tabular regression",
        "an MLP with dropout, Adam with weight decay, MSE, validation every epoch",
        _build,
        faults=("lr_x1000", "flipped_sign", "exp_output"),
        output_module="net",
        output_monitor=True,
    )
]
