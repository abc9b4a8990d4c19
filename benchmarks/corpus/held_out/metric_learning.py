"""Metric learning: an embedding MLP trained with a triplet margin loss on (anchor, positive, negative)
triplets drawn from labelled data; easy triplets give exactly zero loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import Dataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.held_out.synthetic import clusters
from benchmarks.corpus.program import Program, Run


class Triplets(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Random triplets: for sample ``i`` a positive of the same class and a negative of another, fixed by
    the seed (as offline triplet mining writes them out)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        g = generator(seed)
        self.x = x
        positive, negative = [], []
        for label in labels.tolist():
            same = (labels == label).nonzero().flatten()
            other = (labels != label).nonzero().flatten()
            positive.append(same[torch.randint(len(same), (1,), generator=g)])
            negative.append(other[torch.randint(len(other), (1,), generator=g)])
        self.positive, self.negative = torch.cat(positive), torch.cat(negative)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x[i], self.x[self.positive[i]], self.x[self.negative[i]]


class TripletEmbedder(L.LightningModule):
    """An MLP to a 16-d embedding, ``nn.TripletMarginLoss(margin=1)``, SGD with momentum and a step decay;
    1-nearest-neighbour accuracy in validation."""

    def __init__(self, dim: int = 32, embedding: int = 16, lr: float = 0.02) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Sequential(
            nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, embedding)
        )
        self.criterion = nn.TripletMarginLoss(margin=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        anchor, positive, negative = (self(t) for t in batch)
        loss = self.criterion(anchor, positive, negative)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, labels = batch
        z = self(x)
        distance = torch.cdist(z, z) + torch.eye(len(z)) * 1e9
        nn_acc = (labels[distance.argmin(1)] == labels).float().mean()
        self.log("val_1nn_acc", nn_acc)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)]


def _build(seed: int) -> Run:
    x, labels = clusters(1536, classes=10, separation=1.1, seed=seed, task_seed=27).tensors
    return Run(
        TripletEmbedder(),
        loader(Triplets(x, labels, seed), 32, seed=seed),
        loader(clusters(400, classes=10, separation=1.1, seed=seed + 100, task_seed=27), 400, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "triplet_margin_h",
        "metric learning",
        "an MLP embedder trained with nn.TripletMarginLoss on pre-mined random triplets (many become easy and "
        "give exactly zero loss), SGD with momentum and StepLR, 1-NN accuracy in validation",
        _build,
        faults=("lr_div_1e6", "nan_batch", "no_zero_grad"),
    )
]
