"""Survival analysis with the Cox proportional-hazards partial likelihood (DeepSurv): an MLP risk score, the loss
of each batch computed over the risk sets formed inside it (so its level depends on the batch's size and
censoring, and moves a lot from batch to batch), Adam with weight decay, the concordance index on validation."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

DIM = 12


def _patients(n: int, seed: int, task_seed: int = 41) -> TensorDataset:
    """``(x [n, DIM], time [n], event [n])``: exponential event times whose log-hazard is a nonlinear function of
    x, right-censored by independent exponential times (~35% censored)."""
    w = torch.randn(DIM, generator=generator(task_seed)) / DIM**0.5
    s = generator(seed)
    x = torch.randn(n, DIM, generator=s)
    log_hazard = 1.5 * torch.tanh(x @ w * 2) + 0.7 * x[:, 0] * x[:, 1] + 0.5 * torch.sin(2 * x[:, 2]) * x[:, 3]
    event_time = -torch.log(torch.rand(n, generator=s)) / log_hazard.exp()
    censor_time = -torch.log(torch.rand(n, generator=s)) / 0.5
    return TensorDataset(x, torch.minimum(event_time, censor_time), (event_time <= censor_time).float())


def cox_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Breslow partial log-likelihood over the batch, per event (ties ignored)."""
    order = torch.argsort(time, descending=True)
    risk, event = risk[order], event[order]
    at_risk = torch.logcumsumexp(risk, dim=0)  # everyone with a time >= this one
    return -((risk - at_risk) * event).sum() / event.sum().clamp(min=1)


def concordance(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Harrell's C: of the comparable pairs (the earlier time had an event), the share ranked right by risk."""
    earlier = (time[:, None] < time[None, :]) & (event[:, None] > 0)
    right = (risk[:, None] > risk[None, :]).float() + 0.5 * (risk[:, None] == risk[None, :]).float()
    return (right * earlier).sum() / earlier.sum().clamp(min=1)


class DeepSurv(L.LightningModule):
    def __init__(self, lr: float = 2e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(DIM, 64), nn.SELU(), nn.AlphaDropout(0.1), nn.Linear(64, 64), nn.SELU(), nn.Linear(64, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, time, event = batch
        loss = cox_loss(self(x), time, event)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, time, event = batch
        risk = self(x)
        self.log_dict({"val_loss": cox_loss(risk, time, event), "val_c_index": concordance(risk, time, event)})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)


def _build(seed: int) -> Run:
    return Run(
        DeepSurv(),
        loader(_patients(3072, seed), 64, seed=seed),
        loader(_patients(1024, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "deepsurv_cox_h",
        "survival analysis",
        "DeepSurv: an MLP (SELU, AlphaDropout) risk score trained on the Cox partial likelihood over each batch's "
        "risk sets with ~35% censoring, Adam with weight decay, concordance index on validation",
        _build,
        faults=("frozen", "flipped_sign", "nan_batch"),
    )
]
