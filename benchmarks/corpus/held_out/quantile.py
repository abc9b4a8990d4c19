"""Quantile regression: one network predicts the 10th, 50th and 90th percentiles with the pinball loss, whose
gradient has the same size however close the fit is (like L1), on targets whose spread depends on the input."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

QUANTILES = (0.1, 0.5, 0.9)


def _skewed(n: int, seed: int) -> TensorDataset:
    """x in [-2, 2]^4, y = sin(2 x0) + x1 plus gamma-distributed noise whose scale grows with |x2| (skewed, so the
    quantiles are not symmetric around the median)."""
    g = generator(seed)
    x = torch.rand(n, 4, generator=g) * 4 - 2
    spread = 0.2 + 0.4 * x[:, 2:3].abs()
    return TensorDataset(x, torch.sin(2 * x[:, :1]) + x[:, 1:2] + spread * _gamma(n, g))


def _gamma(n: int, g: torch.Generator) -> torch.Tensor:
    # Gamma(2, 2) as the sum of two exponentials, from the seeded generator.
    u = torch.rand(n, 2, generator=g).clamp_min(1e-7)
    return (-u.log()).sum(1, keepdim=True) / 2


def pinball(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    q = torch.tensor(QUANTILES, device=predicted.device)
    error = target - predicted
    return torch.maximum(q * error, (q - 1) * error).mean()


class QuantileRegressor(L.LightningModule):
    """An MLP with one output per quantile, the pinball loss summed over quantiles; Adam with step decay; validation
    coverage of the 10-90 interval (should approach 0.8)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.out = nn.Linear(width, len(QUANTILES))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = pinball(self.out(self.net(x)), y)
        self.log("train_pinball", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        predicted = self.out(self.net(x))
        inside = ((y >= predicted[:, :1]) & (y <= predicted[:, 2:])).float().mean()
        self.log_dict({"val_loss": pinball(predicted, y), "val_coverage_80": inside})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=3e-3)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.3)]


def _build(seed: int) -> Run:
    return Run(
        QuantileRegressor(),
        loader(_skewed(3072, seed), 64, seed=seed),
        loader(_skewed(1024, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 10},
    )


PROGRAMS = [
    Program(
        "quantile_pinball_h",
        "probabilistic regression",
        "an MLP predicting the 10th, 50th and 90th percentiles with the pinball loss (an L1-like gradient that does "
        "not shrink near the fit) on skewed, input-dependent noise; Adam with step decay",
        _build,
        faults=("lr_x1000", "flipped_sign", "frozen"),
    )
]
