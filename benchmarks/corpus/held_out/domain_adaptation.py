"""Unsupervised domain adaptation (DANN): a feature extractor shared by a label classifier, trained on the
labelled source domain, and a domain classifier behind a gradient reversal layer, trained to tell source from
the unlabelled target domain. The reversal coefficient ramps from 0 to 1 and the learning rate anneals as in
Ganin et al.; the domain loss climbs towards ln 2 as the features stop telling the domains apart, so the summed
training loss does not simply fall."""

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

DIM, CLASSES = 16, 4


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def _domains(n: int, seed: int, task_seed: int = 21) -> TensorDataset:
    """Source and target samples of one labelling rule; the target is mixed, scaled and shifted.

    Returns ``(x_source, y_source, x_target, y_target)``; the target labels are used for validation only."""
    g = generator(task_seed)
    centres = torch.randn(CLASSES, DIM, generator=g) * 2.0
    mixing = torch.eye(DIM) + 0.15 * torch.randn(DIM, DIM, generator=g)
    shift = torch.randn(DIM, generator=g) * 1.5
    s = generator(seed)
    y_source = torch.randint(0, CLASSES, (n,), generator=s)
    y_target = torch.randint(0, CLASSES, (n,), generator=s)
    x_source = centres[y_source] + torch.randn(n, DIM, generator=s) * 1.2
    x_target = (centres[y_target] + torch.randn(n, DIM, generator=s) * 1.2) @ mixing * 1.3 + shift
    return TensorDataset(x_source, y_source, x_target, y_target)


class DANN(L.LightningModule):
    def __init__(self, lr: float = 0.01, total_steps: int = 400) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.classifier = nn.Linear(64, CLASSES)
        self.domain = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))

    def _progress(self) -> float:
        return min(1.0, self.global_step / self.hparams.total_steps)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x_source, y_source, x_target, _ = batch
        coefficient = 2.0 / (1.0 + math.exp(-10.0 * self._progress())) - 1.0
        source, target = self.features(x_source), self.features(x_target)
        class_loss = F.cross_entropy(self.classifier(source), y_source)
        reversed_features = _ReverseGradient.apply(torch.cat([source, target]), coefficient)
        domain_labels = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).long().to(source.device)
        domain_loss = F.cross_entropy(self.domain(reversed_features), domain_labels)
        loss = class_loss + domain_loss
        self.log_dict({"class_loss": class_loss, "domain_loss": domain_loss, "train_loss": loss})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, _, x_target, y_target = batch
        logits = self.classifier(self.features(x_target))
        accuracy = (logits.argmax(1) == y_target).float().mean()
        self.log_dict({"val_loss": F.cross_entropy(logits, y_target), "val_target_acc": accuracy})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        total = self.hparams.total_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 + 10 * min(1.0, step / total)) ** -0.75)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    train = loader(_domains(2048, seed), 64, seed=seed)
    epochs = 12
    return Run(
        DANN(total_steps=len(train) * epochs),
        train,
        loader(_domains(512, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": epochs, "check_val_every_n_epoch": 2},
    )


PROGRAMS = [
    Program(
        "dann_grl_h",
        "domain adaptation",
        "DANN: a shared feature extractor, a source label classifier and a domain classifier behind a gradient "
        "reversal layer whose coefficient ramps 0 -> 1, SGD momentum with Ganin's annealing per step, validated "
        "on the target domain",
        _build,
        faults=("lr_x1000", "no_zero_grad", "flipped_sign"),
    )
]
