"""A temporal convolutional network: residual blocks of dilated causal Conv1d (dilations 1, 2, 4, 8) under weight
normalisation (``torch.nn.utils.parametrizations.weight_norm``: each weight is two parameters, a direction and a
magnitude), dropout, Adam with gradient clipping, forecasting the next value of noisy mixed sines."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

LENGTH = 64


def _series(n: int, seed: int) -> TensorDataset:
    """``n`` windows of ``LENGTH + 1`` steps of three sines with random frequencies and phases plus noise 0.1: the
    input is the first ``LENGTH``, the target the same shifted by one."""
    g = generator(seed)
    t = torch.arange(LENGTH + 1, dtype=torch.float)
    frequency = 0.05 + 0.3 * torch.rand(n, 3, 1, generator=g)
    phase = 6.3 * torch.rand(n, 3, 1, generator=g)
    signal = torch.sin(frequency * t + phase).sum(1) + 0.1 * torch.randn(n, LENGTH + 1, generator=g)
    return TensorDataset(signal[:, None, :-1], signal[:, None, 1:])


class CausalBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.pad = 2 * dilation
        self.first = weight_norm(nn.Conv1d(channels, channels, 3, dilation=dilation))
        self.second = weight_norm(nn.Conv1d(channels, channels, 3, dilation=dilation))
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.relu(self.first(F.pad(x, (self.pad, 0)))))
        h = self.dropout(F.relu(self.second(F.pad(h, (self.pad, 0)))))
        return F.relu(x + h)


class TCN(L.LightningModule):
    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.inp = nn.Conv1d(1, channels, 1)
        self.blocks = nn.Sequential(*[CausalBlock(channels, d) for d in (1, 2, 4, 8)])
        self.out = nn.Conv1d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        TCN(),
        loader(_series(768, seed), 32, seed=seed),
        loader(_series(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6, "gradient_clip_val": 0.5},
    )


PROGRAMS = [
    Program(
        "tcn_weight_norm_h",
        "temporal convolution",
        "a TCN of dilated causal Conv1d residual blocks under weight_norm parametrizations, dropout, Adam with "
        "gradient clipping 0.5, one-step forecasting of noisy mixed sines",
        _build,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
    )
]
