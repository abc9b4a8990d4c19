"""Point-cloud classification with PointNet: a per-point MLP shared across points, a max over the points (only the
point that wins each feature gets its gradient), and a classifier on the pooled vector. Synthetic shapes, randomly
rotated about the vertical axis and jittered; Adam with a step decay."""

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

POINTS = 128


def _shapes(n: int, seed: int) -> TensorDataset:
    """``[n, POINTS, 3]`` points sampled on a sphere, a cube's surface, a cylinder or a cone (label 0-3)."""
    g = generator(seed)
    label = torch.randint(0, 4, (n,), generator=g)
    u = torch.rand(n, POINTS, generator=g)
    v = torch.rand(n, POINTS, generator=g) * 2 * math.pi
    sphere_z = 2 * u - 1
    ring = torch.sqrt(1 - sphere_z**2)
    sphere = torch.stack([ring * torch.cos(v), ring * torch.sin(v), sphere_z], -1)
    cube = torch.rand(n, POINTS, 3, generator=g) * 2 - 1
    face = torch.randint(0, 3, (n, POINTS, 1), generator=g)
    cube = cube.scatter(2, face, torch.sign(torch.rand(n, POINTS, 1, generator=g) - 0.5))
    cylinder = torch.stack([torch.cos(v), torch.sin(v), 2 * u - 1], -1)
    cone = torch.stack([(1 - u) * torch.cos(v), (1 - u) * torch.sin(v), 2 * u - 1], -1)
    points = torch.stack([sphere, cube, cylinder, cone], 1)[torch.arange(n), label]
    angle = torch.rand(n, generator=g) * 2 * math.pi
    c, s = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(n, 3, 3)
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = c, -s, s, c
    rotation[:, 2, 2] = 1
    points = points @ rotation.transpose(1, 2) + 0.02 * torch.randn(n, POINTS, 3, generator=g)
    return TensorDataset(points, label)


class PointNet(L.LightningModule):
    """Shared MLP 3-64-128 (with BatchNorm), max over points, classifier 128-64-4 with dropout; Adam, StepLR."""

    def __init__(self) -> None:
        super().__init__()
        self.point_mlp = nn.Sequential(
            nn.Conv1d(3, 64, 1), nn.BatchNorm1d(64), nn.ReLU(), nn.Conv1d(64, 128, 1), nn.BatchNorm1d(128), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 4))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.point_mlp(points.transpose(1, 2)).amax(2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        points, label = batch
        loss = F.cross_entropy(self(points), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        points, label = batch
        logits = self(points)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        PointNet(),
        loader(_shapes(768, seed), 32, seed=seed),
        loader(_shapes(256, seed + 100), 128, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "pointnet_shapes_h",
        "point clouds",
        "PointNet: a per-point Conv1d MLP with BatchNorm shared across 128 points, a max over points, a classifier "
        "with dropout; Adam with StepLR, on rotated, jittered synthetic shapes",
        _build,
        faults=("lr_x1000", "no_zero_grad", "nan_batch"),
    )
]
