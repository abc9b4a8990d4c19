"""A tabular regressor whose parameters carry tensor hooks that clamp each gradient element to [-1, 1]
(``p.register_hook(lambda g: g.clamp(-1, 1))``, set up in ``__init__``), the per-parameter clipping of code that
predates ``clip_grad_norm_`` and of some RL code; the hooks run inside backward, before anything reads the gradients.
A residual MLP with LayerNorm, Huber loss on standardised targets, AdamW with a one-cycle schedule per step."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run

DIM, WIDTH, EPOCHS, BATCH = 16, 96, 4, 64


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.ff = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.norm(x))


class HookClampedRegressor(L.LightningModule):
    def __init__(self, steps: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(DIM, WIDTH), Block(), Block(), nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 1))
        for p in self.parameters():
            p.register_hook(lambda grad: grad.clamp(-1.0, 1.0))

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        pred = self.net(x)
        loss = F.huber_loss(pred, y)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": pred.detach(), "target": y}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        pred = self.net(x)
        self.log_dict({"val_loss": F.huber_loss(pred, y), "val_mae": (pred - y).abs().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self.hparams.steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    train = loader(regression(4096, dim=DIM, noise=0.3, seed=seed), BATCH, seed=seed)
    return Run(
        HookClampedRegressor(steps=len(train) * EPOCHS),
        train,
        loader(regression(1024, dim=DIM, noise=0.3, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "hook_clamped_regressor_h",
        "tabular regression",
        "a residual MLP regressor whose parameters clamp their gradients in tensor hooks (register_hook), Huber "
        "loss, AdamW with a per-step one-cycle schedule",
        _build,
        faults=("lr_x1000", "exp_output", "nan_batch"),
        output_module="net",
        output_monitor=True,
    )
]
