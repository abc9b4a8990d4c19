"""Optimizers that evaluate the loss several times per step: L-BFGS with a line search on a small curve fit (the
scientific-ML pattern: PINNs, system identification)."""

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


def _curve(n: int, seed: int) -> TensorDataset:
    g = generator(seed)
    x = torch.rand(n, 1, generator=g) * 2 * math.pi
    return TensorDataset(x, torch.sin(x) + 0.3 * torch.sin(3 * x) + 0.02 * torch.randn(n, 1, generator=g))


class CurveFit(L.LightningModule):
    """A tanh MLP fitted by L-BFGS with the strong-Wolfe line search on mini-batches of 256. Lightning passes the
    closure to ``LBFGS.step``, which evaluates it (forward and backward) up to ``max_iter`` times and more in the
    line search: ``training_step`` and the backward hooks run several times per optimizer step."""

    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.LBFGS(
            self.parameters(), lr=self.hparams.lr, max_iter=5, history_size=20, line_search_fn="strong_wolfe"
        )


def _lbfgs(seed: int) -> Run:
    return Run(
        CurveFit(),
        loader(_curve(1792, seed), 256, seed=seed),
        loader(_curve(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 16},
    )


PROGRAMS = [
    Program(
        "lbfgs_curve_fit",
        "scientific curve fit",
        "a tanh MLP fitted to a 1-D curve by mini-batch L-BFGS with the strong-Wolfe line search (several closure "
        "evaluations per step)",
        _lbfgs,
        faults=("flipped_sign", "no_zero_grad", "frozen", "lr_div_1e6"),
    )
]
