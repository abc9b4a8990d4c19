"""A tiny model and datamodule for LightningCLI tests: a tanh MLP regression that SGD at lr=0.5 explodes."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class TinyModel(L.LightningModule):
    """A tanh MLP regressor trained with plain SGD at ``lr``."""

    def __init__(self, lr: float = 0.05, hidden: int = 32) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Linear(16, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TinyData(L.LightningDataModule):
    """Random inputs with a smooth teacher target."""

    def __init__(self, size: int = 512, batch_size: int = 32) -> None:
        super().__init__()
        self.size = size
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.size, 16, generator=g)
        w = torch.randn(16, 1, generator=torch.Generator().manual_seed(1)) / math.sqrt(16)
        y = 2 * torch.tanh(x @ w) + 0.1 * torch.randn(self.size, 1, generator=g)
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=True, generator=g)
