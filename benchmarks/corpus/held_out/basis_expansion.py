"""An N-BEATS-style forecaster, as forecasting libraries build it: a stack of fully connected blocks, each emitting a
backcast that is subtracted from its input (the next block sees what is left to explain) and a forecast that is
summed over blocks; each window is normalised by its own mean and scale first and the forecast scaled back. Trained
on many series' windows with the L1 loss, Adam, and ``ReduceLROnPlateau`` on the validation loss."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

LOOKBACK, HORIZON, WIDTH, BLOCKS, EPOCHS, BATCH = 48, 12, 96, 4, 8, 128


def windows(series: int, seed: int, per_series: int = 24) -> TensorDataset:
    """``(past [n, LOOKBACK], future [n, HORIZON])`` cut from series of a level, a trend, two seasons and noise."""
    g = generator(seed)
    length = LOOKBACK + HORIZON + per_series
    t = torch.arange(length).float()
    past, future = [], []
    for _ in range(series):
        level, trend = torch.randn(1, generator=g) * 5, torch.randn(1, generator=g) * 0.05
        period = float(torch.randint(6, 25, (1,), generator=g))
        phase = float(torch.rand(1, generator=g)) * 2 * math.pi
        amplitude = 1 + torch.rand(1, generator=g) * 2
        y = level + trend * t + amplitude * torch.sin(2 * math.pi * t / period + phase)
        y = y + 0.5 * torch.sin(2 * math.pi * t / (period * 3.3)) + 0.2 * torch.randn(length, generator=g)
        for start in range(per_series):
            past.append(y[start : start + LOOKBACK])
            future.append(y[start + LOOKBACK : start + LOOKBACK + HORIZON])
    return TensorDataset(torch.stack(past), torch.stack(future))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(LOOKBACK, WIDTH),
            nn.ReLU(),
            nn.Linear(WIDTH, WIDTH),
            nn.ReLU(),
            nn.Linear(WIDTH, WIDTH),
            nn.ReLU(),
        )
        self.backcast, self.forecast = nn.Linear(WIDTH, LOOKBACK), nn.Linear(WIDTH, HORIZON)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.backcast(h), self.forecast(h)


class BasisForecaster(L.LightningModule):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.blocks = nn.ModuleList(Block() for _ in range(BLOCKS))

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        mean = past.mean(1, keepdim=True)
        scale = past.std(1, keepdim=True) + 1e-3
        residual = (past - mean) / scale
        forecast = torch.zeros(len(past), HORIZON, device=past.device)
        for block in self.blocks:
            backcast, part = block(residual)
            residual = residual - backcast
            forecast = forecast + part
        return forecast * scale + mean

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        past, future = batch
        loss = F.l1_loss(self(past), future)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        past, future = batch
        self.log("val_loss", F.l1_loss(self(past), future))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "monitor": "val_loss"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        BasisForecaster(),
        loader(windows(128, seed), BATCH, seed=seed),
        loader(windows(32, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "nbeats_basis_forecaster_h",
        "forecasting",
        "an N-BEATS-style stack: fully connected blocks whose backcasts are subtracted from the input and whose "
        "forecasts are summed, each window normalised by its own mean and scale; L1 loss, Adam, ReduceLROnPlateau",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "flipped_sign"),
    )
]
