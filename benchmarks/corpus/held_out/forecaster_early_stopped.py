"""An LSTM forecaster with the training setup of common time-series libraries: gradient clipping at 0.1, Adam at 1e-3,
``EarlyStopping`` on the validation loss with ``min_delta=1e-4`` and patience 5, the best checkpoint kept; windows of
48 past values predict the next 12."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import multi_sine, windows
from benchmarks.corpus.program import Program, Run

WINDOW, HORIZON = 48, 12


class LSTMForecaster(L.LightningModule):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, HORIZON)

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(past)
        return self.head(out[:, -1])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        past, future = batch
        loss = F.mse_loss(self(past), future)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        past, future = batch
        self.log("val_loss", F.mse_loss(self(past), future))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    series = multi_sine(1600, seed=seed, noise=0.2)
    return Run(
        LSTMForecaster(),
        loader(windows(series[:1200], WINDOW, HORIZON), 64, seed=seed),
        loader(windows(series[1200:], WINDOW, HORIZON), 400, shuffle=False),
        trainer={
            "max_epochs": 40,
            "gradient_clip_val": 0.1,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_loss", mode="min", min_delta=1e-4, patience=5),
                ModelCheckpoint(monitor="val_loss", mode="min"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "lstm_forecaster_early_stopped_h",
        "time series",
        "an LSTM forecaster (48 past values -> 12 next) with gradient clipping at 0.1, Adam 1e-3, early stopping "
        "(min_delta 1e-4, patience 5) and the best checkpoint kept",
        _build,
        faults=("lr_x1000", "frozen", "flipped_sign"),
        output_module="head",
    )
]
