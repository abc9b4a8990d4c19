"""Evidential deep learning for classification, as its paper's code trains it: the network outputs non-negative
evidence per class (softplus), read as a Dirichlet over class probabilities (alpha = evidence + 1). The loss is the
expected squared error under that Dirichlet plus a KL term that shrinks the evidence for wrong classes towards the
uniform Dirichlet, its weight annealed from 0 to 1 over the first ten epochs, in training and in validation alike.
So the objective itself grows while the network learns: the KL term is switched on gradually. Adam with a step decay;
validation logs the loss, the accuracy and the mean uncertainty (K / sum of alpha)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES = 10


def kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(1, ..., 1)) per row."""
    total = alpha.sum(1)
    k = torch.tensor(float(alpha.shape[1]))
    return (
        torch.lgamma(total)
        - torch.lgamma(k)
        - torch.lgamma(alpha).sum(1)
        + ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(total)[:, None])).sum(1)
    )


class EvidentialClassifier(L.LightningModule):
    def __init__(self, anneal_epochs: int = 10, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(64, CLASSES)

    def evidential_loss(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        alpha = F.softplus(logits) + 1
        strength = alpha.sum(1, keepdim=True)
        p = alpha / strength
        one_hot = F.one_hot(y, CLASSES).float()
        risk = ((one_hot - p) ** 2 + p * (1 - p) / (strength + 1)).sum(1)
        kl = kl_to_uniform(one_hot + (1 - one_hot) * alpha)
        weight = min(1.0, self.current_epoch / self.hparams.anneal_epochs)
        return (risk + weight * kl).mean(), risk.mean(), kl.mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, risk, kl = self.evidential_loss(self.classifier(self.features(x)), y)
        self.log_dict({"train_loss": loss, "train_risk": risk, "train_kl": kl})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.classifier(self.features(x))
        loss, _, _ = self.evidential_loss(logits, y)
        alpha = F.softplus(logits) + 1
        uncertainty = (CLASSES / alpha.sum(1)).mean()
        accuracy = (logits.argmax(1) == y).float().mean()
        self.log_dict({"val_loss": loss, "val_acc": accuracy, "val_uncertainty": uncertainty})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=5e-3)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        EvidentialClassifier(),
        loader(images(4000, classes=CLASSES, noise=3.5, seed=seed), 64, seed=seed),
        loader(images(1000, classes=CLASSES, noise=3.5, seed=seed + 100), 500, shuffle=False),
        trainer={"max_epochs": 14},
    )


PROGRAMS = [
    Program(
        "evidential_classifier_h",
        "image classification",
        "evidential deep learning: softplus evidence read as a Dirichlet, expected squared error plus a KL to the "
        "uniform Dirichlet whose weight is annealed 0 -> 1 over ten epochs in training and validation; Adam with "
        "weight decay and a step decay; accuracy and uncertainty validated",
        _build,
        faults=("lr_x1000", "nan_batch", "exp_output", "lr_div_1e6"),
        output_module="classifier",
    )
]
