"""Curriculum learning: the module raises the input noise of its own training set stage by stage, so the
training loss legitimately jumps up at each stage and falls again; validation is at the final difficulty."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

LEVELS = (0.5, 1.0, 1.5)
"""Noise scale per curriculum stage: easy, medium, the final (validation) difficulty."""


class NoisyClusters(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Class clusters seen through a fixed nonlinear mixing, with a noise scale the curriculum can raise:
    each sample's noise direction is fixed; ``level`` scales it."""

    def __init__(self, n: int, classes: int = 6, dim: int = 24, seed: int = 0, task_seed: int = 91) -> None:
        g = generator(task_seed)
        self.centres = torch.randn(classes, dim, generator=g)
        self.mixing = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
        s = generator(seed)
        self.labels = torch.randint(0, classes, (n,), generator=s)
        self.noise = torch.randn(n, dim, generator=s)
        self.level = LEVELS[0]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.centres[self.labels[i]] + self.level * self.noise[i]
        return torch.tanh(z @ self.mixing) * 2 + 0.2 * z, self.labels[i]


class CurriculumClassifier(L.LightningModule):
    """An MLP classifier; ``on_train_epoch_start`` moves its training set to the next noise level every
    ``epochs_per_stage`` epochs; SGD with momentum; torchmetrics accuracy at the hardest level."""

    def __init__(self, curriculum: NoisyClusters, epochs_per_stage: int = 2, dim: int = 24, classes: int = 6) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["curriculum"])
        self.curriculum = curriculum
        self.body = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.classifier = nn.Linear(64, classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))

    def on_train_epoch_start(self) -> None:
        stage = min(self.current_epoch // self.hparams.epochs_per_stage, len(LEVELS) - 1)
        self.curriculum.level = LEVELS[stage]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log_dict({"train_loss": loss, "noise_level": self.curriculum.level})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": self.val_acc})

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.03, momentum=0.9)


def _build(seed: int) -> Run:
    train = NoisyClusters(1536, seed=seed)
    val = NoisyClusters(512, seed=seed + 100)
    val.level = LEVELS[-1]
    return Run(
        CurriculumClassifier(train),
        loader(train, 48, seed=seed),
        loader(val, 512, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "curriculum_noise_h",
        "curriculum learning",
        "an MLP classifier whose training noise the module raises every two epochs (three stages, the loss "
        "steps up at each), SGD with momentum, validation accuracy at the final difficulty",
        _build,
        faults=("exp_output", "no_zero_grad", "flipped_sign"),
        output_module="classifier",
    )
]
