"""Self-distillation without labels (DINO): a student matches an EMA teacher's sharpened, centred outputs on two
views; the last layer's gradient is cancelled during the first epoch, as DINO's training loop does."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

PROTOTYPES = 256


def _clusters(n: int, seed: int, task_seed: int = 23) -> TensorDataset:
    centres = torch.randn(10, 32, generator=generator(task_seed)) * 2
    g = generator(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    return TensorDataset(centres[labels] + torch.randn(n, 32, generator=g))


class ProjectionHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32))
        self.last = nn.Linear(32, PROTOTYPES, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


class Dino(L.LightningModule):
    """Student backbone + head; the teacher is a frozen deep copy updated by EMA after every batch, its outputs
    centred by a running buffer and sharpened (temperature 0.04 against the student's 0.1). ``p.grad = None`` on
    the head's last layer during epoch 0 (``cancel_gradients_last_layer``), AdamW with weight decay, clipping."""

    def __init__(self, lr: float = 5e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.student = nn.ModuleDict(
            {"backbone": nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64)), "head": ProjectionHead()}
        )
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("center", torch.zeros(PROTOTYPES))

    @staticmethod
    def embed(net: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        return net["head"](net["backbone"](x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0]
        views = (x + 0.3 * torch.randn_like(x), x * (1 + 0.2 * torch.randn_like(x)))
        student = [self.embed(self.student, v) / 0.1 for v in views]
        with torch.no_grad():
            teacher = [self.embed(self.teacher, v) for v in views]
            targets = [F.softmax((t - self.center) / 0.04, -1) for t in teacher]
            self.center.mul_(0.9).add_(0.1 * torch.cat(teacher).mean(0))
        loss = -0.5 * sum(
            (target * F.log_softmax(s, -1)).sum(-1).mean() for target, s in zip(targets, reversed(student))
        )
        self.log("train_loss", loss)
        return loss

    def on_after_backward(self) -> None:
        if self.current_epoch < 1:
            for p in self.student["head"].last.parameters():
                p.grad = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            for averaged, live in zip(self.teacher.parameters(), self.student.parameters()):
                averaged.lerp_(live, 0.004)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.student.parameters(), lr=self.hparams.lr, weight_decay=0.04)


def _dino(seed: int) -> Run:
    return Run(
        Dino(),
        loader(_clusters(3072, seed), 64, seed=seed, drop_last=True),
        trainer={"max_epochs": 5, "gradient_clip_val": 3.0},
    )


PROGRAMS = [
    Program(
        "dino_self_distillation",
        "self-supervised distillation",
        "DINO: student vs EMA teacher with centring and sharpening, the last layer's gradient cancelled in epoch 0, "
        "AdamW, clipping, no validation",
        _dino,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
