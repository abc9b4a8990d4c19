"""FixMatch-style semi-supervised learning, written against the standalone ``pytorch_lightning`` package: a fifth of
the examples carry labels; every batch pairs labelled examples with unlabelled ones, whose weakly perturbed view gives a
pseudo-label wherever the model is at least 95% sure, and whose strongly perturbed view is trained on that label.
The unlabelled term is averaged over every unlabelled example, confident or not, so it starts near zero (nothing is
confident yet) and grows as more examples pass the threshold: the total loss rises for a while by design. SGD with
Nesterov momentum, cosine decay per step."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.held_out.synthetic import clusters
from benchmarks.corpus.program import Program, Run

CLASSES, DIM = 6, 24
THRESHOLD, UNLABELLED_WEIGHT = 0.95, 1.0


class LabelledAndUnlabelled(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Item i: labelled example i (cycled: there are far fewer of them) and unlabelled example i."""

    def __init__(self, labelled: TensorDataset, unlabelled: torch.Tensor) -> None:
        self.x, self.y = labelled.tensors
        self.unlabelled = unlabelled

    def __len__(self) -> int:
        return len(self.unlabelled)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        j = i % len(self.y)
        return self.x[j], self.y[j], self.unlabelled[i]


class FixMatch(pl.LightningModule):
    def __init__(self, lr: float = 0.03, total_steps: int = 600) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(DIM, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def _weak(x: torch.Tensor) -> torch.Tensor:
        return x + 0.05 * torch.randn_like(x)

    @staticmethod
    def _strong(x: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand_like(x) > 0.3).float()
        return (x + 0.4 * torch.randn_like(x)) * keep / 0.7

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, u = batch
        supervised = F.cross_entropy(self(self._weak(x)), y)
        with torch.no_grad():
            probs = F.softmax(self(self._weak(u)), dim=1)
            confidence, pseudo = probs.max(dim=1)
            mask = (confidence >= THRESHOLD).float()
        unlabelled = (F.cross_entropy(self(self._strong(u)), pseudo, reduction="none") * mask).mean()
        loss = supervised + UNLABELLED_WEIGHT * unlabelled
        self.log_dict({"train_loss": loss, "sup_loss": supervised, "unsup_loss": unlabelled, "mask": mask.mean()})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(
            self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        total = self.hparams.total_steps
        cosine = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: math.cos(7 * math.pi * step / (16 * total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    data = clusters(4000, classes=CLASSES, dim=DIM, separation=0.7, spread=0.8, seed=seed, task_seed=41)
    x, y = data.tensors
    order = torch.randperm(len(y), generator=generator(seed))
    labelled = TensorDataset(x[order[:800]], y[order[:800]])
    train = LabelledAndUnlabelled(labelled, x[order[800:]])
    val = clusters(800, classes=CLASSES, dim=DIM, separation=0.7, spread=0.8, seed=seed + 100, task_seed=41)
    steps = 6 * math.ceil(len(train) / 32)
    return Run(
        FixMatch(total_steps=steps),
        loader(train, 32, seed=seed, drop_last=True),
        loader(val, 400, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "fixmatch_pseudo_labels_h",
        "semi-supervised classification",
        "FixMatch on 20% labels (pytorch_lightning): pseudo-labels from a weak view above 95% confidence train a "
        "strong view, the unlabelled term averaged over all unlabelled examples (it grows from ~0 as confidence "
        "spreads), Nesterov SGD with a per-step cosine",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign", "lr_div_1e6"),
    )
]
