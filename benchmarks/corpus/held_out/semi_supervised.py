"""Mean Teacher semi-supervised classification: a student trained on a few labels plus a consistency loss to an
exponential-moving-average teacher on unlabelled data, the consistency weight ramped up over the first epochs
(sigmoid ramp-up). The total loss rises while that weight grows, by design."""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, images, loader
from benchmarks.corpus.program import Program, Run


class MeanTeacher(L.LightningModule):
    """Student CNN; the teacher a copy whose weights follow the student's by EMA (``decay``) after every step. Each
    batch holds labelled images (label >= 0) and unlabelled ones (label -1): cross-entropy on the labelled, squared
    difference of softmaxes to the teacher on all, under input noise, weighted by ``w * exp(-5 (1 - t)^2)`` with t
    rising to 1 over ``rampup`` steps. SGD Nesterov."""

    def __init__(self, classes: int = 10, weight: float = 10.0, rampup: int = 200, decay: float = 0.99) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.student = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(32, classes),
        )  # fmt: skip
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)

    def consistency_weight(self) -> float:
        t = min(1.0, self.global_step / self.hparams.rampup)
        return self.hparams.weight * math.exp(-5 * (1 - t) ** 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        student = self.student(x + 0.2 * torch.randn_like(x))
        with torch.no_grad():
            teacher = self.teacher(x + 0.2 * torch.randn_like(x))
        labelled = y >= 0
        supervised = F.cross_entropy(student[labelled], y[labelled]) if labelled.any() else student.sum() * 0
        consistency = F.mse_loss(student.softmax(1), teacher.softmax(1))
        loss = supervised + self.consistency_weight() * consistency
        self.log_dict({"train_loss": loss, "train_supervised": supervised, "train_consistency": consistency})
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
                t.lerp_(s, 1 - self.hparams.decay)
            for t, s in zip(self.teacher.buffers(), self.student.buffers(), strict=True):
                t.copy_(s)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.teacher(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.student.parameters(), lr=0.03, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _few_labels(data: TensorDataset, labelled: float, seed: int) -> TensorDataset:
    x, y = data.tensors
    hide = torch.rand(len(y), generator=generator(seed + 3000)) >= labelled
    return TensorDataset(x, torch.where(hide, torch.full_like(y, -1), y))


def _build(seed: int) -> Run:
    return Run(
        MeanTeacher(),
        loader(_few_labels(images(2048, noise=1.2, seed=seed), 0.1, seed), 64, seed=seed),
        loader(images(512, noise=1.2, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "mean_teacher_rampup_h",
        "semi-supervised classification",
        "Mean Teacher: 10% of the labels, an EMA teacher, a consistency loss whose weight ramps up over 200 steps "
        "(the total loss rises meanwhile), SGD Nesterov",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
