"""Scheduled sampling (Bengio et al.): an autoregressive forecaster trained with teacher forcing whose probability
decays from 1 to 0.2 over training, so it is fed more and more of its own predictions; the training loss stops
falling, or rises, while the model gets better at what it is for (free-running forecasts)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run


def _waves(n: int, length: int = 40, seed: int = 0) -> TensorDataset:
    """Sines with random frequencies, amplitudes and phases plus a little noise: ``[n, length, 1]``."""
    g = generator(seed)
    t = torch.arange(length, dtype=torch.float)
    freq = 0.15 + 0.25 * torch.rand(n, 1, generator=g)
    amplitude = 0.5 + torch.rand(n, 1, generator=g)
    phase = 6.28 * torch.rand(n, 1, generator=g)
    series = amplitude * torch.sin(freq * t + phase) + 0.05 * torch.randn(n, length, generator=g)
    return TensorDataset(series.unsqueeze(-1))


class ScheduledSamplingForecaster(L.LightningModule):
    """A GRU cell unrolled over the series, predicting each next value; at each position the next input is the true
    value with probability ``teacher(step)`` (linear decay from 1 to 0.2 over ``decay_steps``), else the model's
    own prediction. Validation: the free-running forecast of the last 16 values from the first 24."""

    def __init__(self, hidden: int = 64, decay_steps: int = 300, warmup: int = 24) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cell = nn.GRUCell(1, hidden)
        self.out = nn.Linear(hidden, 1)

    def teacher(self) -> float:
        return max(0.2, 1.0 - 0.8 * self.global_step / self.hparams.decay_steps)

    def unroll(self, series: torch.Tensor, forcing: float, observed: int) -> torch.Tensor:
        """Predictions of positions 1..T-1; positions below ``observed`` are always fed the truth."""
        h = series.new_zeros(len(series), self.hparams.hidden)
        x, predictions = series[:, 0], []
        for t in range(1, series.size(1)):
            h = self.cell(x, h)
            predicted = self.out(h)
            predictions.append(predicted)
            use_truth = t < observed or torch.rand(()) < forcing
            x = series[:, t] if use_truth else predicted
        return torch.stack(predictions, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (series,) = batch
        loss = F.mse_loss(self.unroll(series, self.teacher(), 1), series[:, 1:])
        self.log_dict({"train_loss": loss, "teacher_forcing": self.teacher()})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        (series,) = batch
        w = self.hparams.warmup
        predicted = self.unroll(series, 0.0, w)
        self.log("val_loss", F.mse_loss(predicted[:, w - 1 :], series[:, w:]))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _build(seed: int) -> Run:
    return Run(
        ScheduledSamplingForecaster(),
        loader(_waves(1024, seed=seed), 32, seed=seed),
        loader(_waves(256, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 12, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "scheduled_sampling_gru_h",
        "time-series forecasting",
        "an autoregressive GRU forecaster whose teacher forcing decays from 1 to 0.2 (scheduled sampling): it is fed "
        "more and more of its own predictions, so its training loss does not fall like a forced model's; Adam, "
        "clipping, a free-running validation forecast",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
