"""Knowledge distillation: a wide teacher trained inside ``build`` then frozen, a small student trained on
``KL(teacher || student) * T^2`` blended with cross-entropy on the labels."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import clusters
from benchmarks.corpus.program import Program, Run


def _mlp(dim: int, hidden: int, classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )


def pretrain_teacher(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 150) -> nn.Module:
    """The teacher, trained the ordinary way (Adam, cross-entropy) on the same data, then frozen."""
    teacher = _mlp(x.size(1), 128, classes)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(teacher(x[idx]), y[idx]).backward()
        optimizer.step()
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


class Distiller(L.LightningModule):
    """Student MLP trained on ``alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * CE``; the loss
    terms are returned with the loss; SGD with Nesterov momentum and cosine annealing; accuracy of both
    networks in validation."""

    def __init__(
        self, teacher: nn.Module, dim: int = 32, classes: int = 8, temperature: float = 4.0, alpha: float = 0.7
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["teacher"])
        self.teacher = teacher
        self.student = _mlp(dim, 24, classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)

    def on_train_epoch_start(self) -> None:
        self.teacher.eval()

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        t = self.hparams.temperature
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        logits = self.student(x)
        kd = (
            F.kl_div(
                F.log_softmax(logits / t, 1),
                F.log_softmax(teacher_logits / t, 1),
                reduction="batchmean",
                log_target=True,
            )
            * t**2
        )
        ce = F.cross_entropy(logits, y)
        loss = self.hparams.alpha * kd + (1 - self.hparams.alpha) * ce
        self.log_dict({"train_loss": loss, "kd": kd, "ce": ce})
        return {"loss": loss, "loss_terms": {"kd": kd.detach(), "ce": ce.detach()}}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.student(x)
        self.val_acc(logits, y)
        teacher_acc = (self.teacher(x).argmax(1) == y).float().mean()
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": self.val_acc, "teacher_acc": teacher_acc})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.student.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)]


def _build(seed: int) -> Run:
    train = clusters(2048, classes=8, separation=0.6, seed=seed)
    x, y = train.tensors
    teacher = pretrain_teacher(x, y, classes=8)
    return Run(
        Distiller(teacher),
        loader(train, 64, seed=seed),
        loader(clusters(512, classes=8, separation=0.6, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "distill_kd_h",
        "knowledge distillation",
        "a frozen pretrained teacher and a small student trained on KL(teacher||student) * T^2 plus "
        "cross-entropy, loss terms returned with the loss, SGD with Nesterov momentum and cosine annealing",
        _build,
        faults=("flipped_sign", "no_zero_grad", "exp_output"),
        output_module="student",
    )
]
