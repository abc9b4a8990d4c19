"""Time-series forecasting: an LSTM over sliding windows of a noisy multi-sine signal predicting the next
few values, Adam with a one-cycle schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import multi_sine, windows
from benchmarks.corpus.program import Program, Run


class LSTMForecaster(L.LightningModule):
    """LSTM encoder over the window, a linear head from the last hidden state to the horizon; MSE, Adam with
    OneCycleLR stepped per batch; validation MSE and the naive last-value baseline's MSE for comparison."""

    def __init__(self, hidden: int = 32, horizon: int = 4, max_lr: float = 1e-2, total: int = 150) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(past)
        return self.head(out[:, -1])

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        past, future = batch
        forecast = self(past)
        loss = F.mse_loss(forecast, future)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": forecast, "target": future}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        past, future = batch
        naive = past[:, -1].expand_as(future)
        self.log_dict({"val_loss": F.mse_loss(self(past), future), "val_naive": F.mse_loss(naive, future)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.max_lr)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.hparams.max_lr, total_steps=self.hparams.total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    total = 150
    window, horizon = 24, 4
    return Run(
        LSTMForecaster(horizon=horizon, total=total),
        loader(windows(multi_sine(2000, seed=seed), window, horizon), 64, seed=seed),
        loader(windows(multi_sine(540, seed=seed + 100), window, horizon), 512, shuffle=False),
        trainer={"max_steps": total, "val_check_interval": 30},
    )


PROGRAMS = [
    Program(
        "lstm_forecast_h",
        "time-series forecasting",
        "an LSTM over sliding windows of a noisy multi-sine series predicting the next four values, MSE, Adam "
        "with OneCycleLR per batch, validation against the last-value baseline",
        _build,
        faults=("nan_batch", "no_zero_grad", "exp_output"),
        output_module="head",
        output_monitor=True,
    )
]
