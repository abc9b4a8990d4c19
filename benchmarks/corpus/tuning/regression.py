"""Regression edge cases: batch-size-1 SGD on heavy-tailed targets, and a linear model that converges in a few
steps and then sits at its optimum for the rest of the run."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader, regression
from benchmarks.corpus.program import Program, Run


class OnlineRegressor(L.LightningModule):
    """One sample per step (``batch_size=1``), plain SGD, MSE: every outlier of the Student-t noise lands as a
    whole step. Validation logs MSE and MAE (the robust number for heavy tails)."""

    def __init__(self, dim: int = 16, hidden: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        pred = self(x)
        loss = F.mse_loss(pred, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return {"loss": loss, "preds": pred, "target": y}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        pred = self(x)
        self.log_dict({"val_loss": F.mse_loss(pred, y), "val_mae": F.l1_loss(pred, y)})

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _online(seed: int) -> Run:
    return Run(
        OnlineRegressor(),
        loader(regression(160, noise=0.3, heavy_tail=True, seed=seed), 1, seed=seed),
        loader(regression(1024, noise=0.3, heavy_tail=True, seed=seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 3, "val_check_interval": 40},
    )


def _linear_data(n: int, seed: int, dim: int = 8, noise: float = 0.01) -> TensorDataset:
    w = torch.randn(dim, 1, generator=generator(17)) / dim**0.5
    g = generator(seed)
    x = torch.randn(n, dim, generator=g)
    return TensorDataset(x, x @ w + 0.5 + noise * torch.randn(n, 1, generator=g))


class LinearRegression(L.LightningModule):
    """``nn.Linear`` on near-noiseless linear data with Adam at lr 0.1: most of the way within ~10 steps, at the
    noise floor by ~100, then a few hundred steps of nothing to do but hold it."""

    def __init__(self, dim: int = 8, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

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
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _linear(seed: int) -> Run:
    return Run(
        LinearRegression(),
        loader(_linear_data(512, seed), 64, seed=seed),
        loader(_linear_data(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 50, "check_val_every_n_epoch": 5},
    )


PROGRAMS = [
    Program(
        "batch1_heavy_tail_sgd",
        "tabular regression",
        "batch size 1 plain SGD on a small MLP with Student-t (heavy-tailed) target noise, MSE, validation MAE",
        _online,
        faults=("lr_x1000", "no_zero_grad", "exp_output"),
        output_module="net",
        output_monitor=True,
    ),
    Program(
        "linear_converged_early",
        "tabular regression",
        "linear regression on near-noiseless data with Adam lr 0.1: near its optimum within ~10 steps, at the "
        "noise floor by ~100, 400 steps in all",
        _linear,
        faults=("lr_div_1e6", "frozen", "exp_output"),
        output_module="linear",
        output_monitor=True,
    ),
]
