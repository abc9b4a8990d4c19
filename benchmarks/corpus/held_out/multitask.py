"""Multi-task learning: a shared encoder with a classification head and a regression head, trained on a
weighted sum of the two losses, each term returned with the loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.held_out.synthetic import clusters
from benchmarks.corpus.program import Program, Run


def two_tasks(n: int, seed: int) -> TensorDataset:
    """Cluster labels for the classification task and a smooth function of the same inputs for the
    regression task: ``(x [n, 32], label [n], target [n, 1])``."""
    x, label = clusters(n, classes=5, seed=seed, task_seed=23).tensors
    w = torch.randn(x.size(1), 1, generator=generator(29)) / x.size(1) ** 0.5
    target = 1.5 * torch.tanh(x @ w) + 0.2 * label[:, None].float() + 0.1 * torch.randn(n, 1, generator=generator(seed))
    return TensorDataset(x, label, target)


class MultiTask(L.LightningModule):
    """Shared two-layer encoder, a classification and a regression head; ``CE + 0.5 * MSE`` returned with
    both terms; Adam with ExponentialLR per epoch; torchmetrics accuracy and MAE in validation."""

    def __init__(self, dim: int = 32, hidden: int = 64, classes: int = 5, weight: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, classes)
        self.regressor = nn.Linear(hidden, 1)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)
        self.val_mae = torchmetrics.MeanAbsoluteError()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.classifier(h), self.regressor(h)

    def _terms(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x, label, target = batch
        logits, value = self(x)
        return F.cross_entropy(logits, label), F.mse_loss(value, target), logits, value

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        cls, reg, _, _ = self._terms(batch)
        loss = cls + self.hparams.weight * reg
        self.log_dict({"train_loss": loss, "cls_loss": cls, "reg_loss": reg})
        return {"loss": loss, "loss_terms": {"cls": cls.detach(), "reg": reg.detach()}}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        cls, reg, logits, value = self._terms(batch)
        self.val_acc(logits, batch[1])
        self.val_mae(value, batch[2])
        self.log_dict({"val_loss": cls + self.hparams.weight * reg, "val_acc": self.val_acc, "val_mae": self.val_mae})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=2e-3)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.85)]


def _build(seed: int) -> Run:
    return Run(
        MultiTask(),
        loader(two_tasks(2048, seed), 64, seed=seed),
        loader(two_tasks(512, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "multitask_cls_reg_h",
        "multi-task",
        "a shared MLP encoder with classification and regression heads, CE + 0.5 MSE returned with its loss "
        "terms, Adam with exponential decay per epoch, torchmetrics accuracy and MAE",
        _build,
        faults=("flipped_sign", "nan_batch", "lr_div_1e6"),
    )
]
