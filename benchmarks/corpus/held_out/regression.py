"""Regression beyond MSE: a Huber-loss MLP on data with outliers (RMSprop, ReduceLROnPlateau) and a mixture
density network trained on the Gaussian-mixture negative log-likelihood, which falls below zero."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.held_out.synthetic import inverse_sine
from benchmarks.corpus.program import Program, Run


class HuberRegressor(L.LightningModule):
    """An MLP on heavy-tailed targets, Huber loss (delta 1), RMSprop, ReduceLROnPlateau on val_loss, MAE
    against the noiseless target in validation."""

    def __init__(self, dim: int = 16, hidden: int = 64, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.criterion = nn.HuberLoss(delta=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.criterion(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, clean = batch
        prediction = self(x)
        self.log_dict({"val_loss": self.criterion(prediction, y), "val_clean_mae": F.l1_loss(prediction, clean)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr, alpha=0.9)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.3, patience=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def _build_huber(seed: int) -> Run:
    val = regression(512, noise=0.5, seed=seed + 100, heavy_tail=True)
    clean = regression(512, noise=0.0, seed=seed + 100).tensors[1]
    val = torch.utils.data.TensorDataset(*val.tensors, clean)
    return Run(
        HuberRegressor(),
        loader(regression(2048, noise=0.5, seed=seed, heavy_tail=True), 64, seed=seed),
        loader(val, 512, shuffle=False),
        trainer={"max_epochs": 8},
    )


class MixtureDensityNetwork(L.LightningModule):
    """Bishop's MDN: a tanh MLP emits mixture logits, means and log standard deviations of ``k`` Gaussians;
    loss = negative log-likelihood of the mixture (negative once the fit is sharp); Adam with
    ExponentialLR per epoch."""

    def __init__(self, hidden: int = 32, k: int = 4, lr: float = 5e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, 3 * k)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, mean, log_std = self.head(self.body(y)).chunk(3, dim=1)
        return logits, mean, log_std.clamp(-7.0, 7.0)

    def nll(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, mean, log_std = self(y)
        log_prob = -0.5 * ((x - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        return -torch.logsumexp(F.log_softmax(logits, 1) + log_prob, 1).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.nll(*batch)
        self.log("train_nll", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.nll(*batch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.8)]


def _build_mdn(seed: int) -> Run:
    return Run(
        MixtureDensityNetwork(),
        loader(inverse_sine(2048, seed=seed), 64, seed=seed),
        loader(inverse_sine(512, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "huber_rmsprop_h",
        "robust regression",
        "an MLP on targets with Student-t outliers, Huber loss, RMSprop, ReduceLROnPlateau on val_loss, "
        "validation MAE against the noiseless target",
        _build_huber,
        faults=("lr_x1000", "lr_div_1e6", "flipped_sign"),
    ),
    Program(
        "mdn_inverse_sine_h",
        "probabilistic regression",
        "a mixture density network on Bishop's inverted-sine problem, Gaussian-mixture negative "
        "log-likelihood that goes below zero as the fit sharpens, Adam with exponential decay",
        _build_mdn,
        faults=("lr_x1000", "nan_batch", "frozen"),
    ),
]
