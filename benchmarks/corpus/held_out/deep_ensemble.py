"""A deep ensemble in one module: five small regression MLPs with Gaussian heads (mean and log-variance), each trained
on its own bootstrap resample of every batch, the loss the mean of their negative log-likelihoods (which can go below
zero as the variances shrink); the prediction is the mixture of the five. Validation reports the ensemble's NLL and
the spread of its members. Adam 1e-3."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run

MEMBERS = 5


def _gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (log_var + (y - mean) ** 2 / log_var.exp() + math.log(2 * math.pi)).mean()


class DeepEnsemble(L.LightningModule):
    def __init__(self, features: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.members = nn.ModuleList(
            nn.Sequential(
                nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2)
            )
            for _ in range(MEMBERS)
        )

    def member(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.members[i](x)
        return out[:, :1], out[:, 1:].clamp(-8, 8)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        losses = []
        for i in range(MEMBERS):
            pick = torch.randint(0, x.shape[0], (x.shape[0],), device=x.device)  # this member's bootstrap resample
            mean, log_var = self.member(i, x[pick])
            losses.append(_gaussian_nll(mean, log_var, y[pick]))
        loss = torch.stack(losses).mean()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        means, variances = zip(*((m, lv.exp()) for m, lv in (self.member(i, x) for i in range(MEMBERS))))
        mean = torch.stack(means).mean(0)
        variance = (torch.stack(variances) + torch.stack(means) ** 2).mean(0) - mean**2
        self.log_dict(
            {
                "val_loss": _gaussian_nll(mean, variance.clamp_min(1e-6).log(), y),
                "val_mse": ((mean - y) ** 2).mean(),
                "val_member_spread": torch.stack(means).std(0).mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        DeepEnsemble(),
        loader(regression(2048, noise=0.3, seed=seed), 64, seed=seed),
        loader(regression(512, noise=0.3, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "deep_ensemble_nll_h",
        "deep ensemble",
        "five Gaussian-head regression MLPs in one module, each on its own bootstrap resample of every batch, mean "
        "negative log-likelihood (can go below zero); the mixture validated; Adam",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
