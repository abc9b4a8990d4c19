"""Sharpness-aware minimisation (SAM) under manual optimization: two forward/backward passes per step, the first
at the weights, the second at weights pushed up the gradient by rho; the optimizer steps with the second
gradient from the original weights. SGD with momentum, cosine schedule stepped by hand."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class SAMClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.05, rho: float = 0.05, total: int = 256) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        optimizer = self.optimizers()
        schedule = self.lr_schedulers()
        params = [p for p in self.parameters() if p.requires_grad]
        loss = F.cross_entropy(self.net(x), y)
        optimizer.zero_grad()
        self.manual_backward(loss)
        with torch.no_grad():  # climb to the worst nearby weights
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            shifts = [g * (self.hparams.rho / (norm + 1e-12)) for g in grads]
            torch._foreach_add_(params, shifts)
        optimizer.zero_grad()
        self.manual_backward(F.cross_entropy(self.net(x), y))
        with torch.no_grad():
            torch._foreach_sub_(params, shifts)
        optimizer.step()
        schedule.step()  # type: ignore[union-attr]
        self.log("train_loss", loss)
        return loss.detach()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.hparams.total)]


def _build(seed: int) -> Run:
    return Run(
        SAMClassifier(),
        loader(images(2048, size=16, noise=1.5, seed=seed), 32, seed=seed),
        loader(images(512, size=16, noise=1.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "sam_manual_h",
        "image classification",
        "SAM under manual optimization: zero_grad, backward, climb by rho along the gradient, zero_grad, backward "
        "again, step back, optimizer and cosine schedule stepped by hand; a BatchNorm CNN, SGD momentum",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
