"""A regressor whose batch size Lightning's ``BatchSizeFinder`` callback picks, as tutorials teach: before training
it runs a few steps at each of 16, 32, 64, ... (doubling until ``max_trials``, memory or the dataset runs out),
every other callback and the logger switched off, then restores the weights and rebuilds the loaders at the size
it found. The data comes from a ``LightningDataModule`` whose ``batch_size`` the finder sets. A residual MLP with
layer norm, AdamW with a cosine decay over the epochs; validation logs the loss and the mean absolute error."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BatchSizeFinder
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run

DIM, EPOCHS = 24, 10


class Readings(L.LightningDataModule):
    def __init__(self, seed: int, batch_size: int = 16) -> None:
        super().__init__()
        self.seed, self.batch_size = seed, batch_size
        self.train = regression(8192, dim=DIM, noise=0.3, seed=seed)
        self.val = regression(1024, dim=DIM, noise=0.3, seed=seed + 100)

    def train_dataloader(self) -> DataLoader[Any]:
        return loader(self.train, batch_size=self.batch_size, seed=self.seed)

    def val_dataloader(self) -> DataLoader[Any]:
        return loader(self.val, batch_size=512, shuffle=False)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.hidden, self.out = nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(F.gelu(self.hidden(self.norm(x))))


class ResidualRegressor(L.LightningModule):
    def __init__(self, lr: float = 2e-3, width: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(DIM, width), Block(width), Block(width), nn.LayerNorm(width), nn.Linear(width, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        prediction = self.net(x)
        self.log_dict({"val_loss": F.mse_loss(prediction, y), "val_mae": (prediction - y).abs().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    finder = BatchSizeFinder(mode="power", steps_per_trial=3, init_val=16, max_trials=4)
    return Run(ResidualRegressor(), Readings(seed), trainer={"max_epochs": EPOCHS, "callbacks": [finder]})


PROGRAMS = [
    Program(
        "batch_size_finder_regressor_h",
        "regression",
        "a residual MLP regressor whose batch size BatchSizeFinder picks before training (3 steps at each of "
        "16, 32, 64 and 128, weights restored, the loaders rebuilt) from a LightningDataModule, AdamW with a cosine "
        "decay",
        _build,
        faults=("lr_x1000", "flipped_sign", "frozen"),
    )
]
