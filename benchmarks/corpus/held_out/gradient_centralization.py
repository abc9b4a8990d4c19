"""A tabular regressor trained with gradient centralization, written where Lightning lets a module touch the gradients
before the step (``on_before_optimizer_step``): every weight matrix's gradient has the mean over its fan-in removed,
row by row, after LossGuard and the other callbacks have seen it. A residual MLP with dropout on standardised
features and a heavy-tailed target, the Huber loss, Adam, and an exponential decay per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run

DIM, HIDDEN, EPOCHS, BATCH = 16, 128, 12, 64


class ResidualLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(HIDDEN)
        self.body = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.SiLU(), nn.Dropout(0.1), nn.Linear(HIDDEN, HIDDEN))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(self.norm(x))


class CentralizedRegressor(L.LightningModule):
    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(DIM, HIDDEN), ResidualLayer(), ResidualLayer(), nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.huber_loss(self.net(x), y, delta=1.0)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        prediction = self.net(x)
        self.log_dict({"val_loss": F.huber_loss(prediction, y, delta=1.0), "val_mae": F.l1_loss(prediction, y)})

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        for p in self.parameters():
            if p.grad is not None and p.ndim > 1:
                p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.ndim)), keepdim=True))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.85)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        CentralizedRegressor(),
        loader(regression(2048, DIM, noise=0.3, seed=seed, heavy_tail=True), BATCH, seed=seed),
        loader(regression(512, DIM, noise=0.3, seed=seed + 100, heavy_tail=True), 512, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "gradient_centralization_h",
        "regression",
        "gradient centralization in on_before_optimizer_step (each weight gradient's fan-in mean removed after the "
        "callbacks saw it) on a residual MLP with dropout; Huber loss on a heavy-tailed target, Adam, decay per epoch",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "exp_output"),
        output_module="net",
    )
]
