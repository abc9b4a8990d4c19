"""Self-supervised representation learning on unlabelled images, two views per image: MoCo (momentum key
encoder updated outside the optimizer, a queue of negatives, InfoNCE) and SimSiam (predictor, stop-gradient,
negative cosine similarity that heads toward -1). Labels are only used for a k-NN probe in validation."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


def augment(x: torch.Tensor) -> torch.Tensor:
    """A random view: shift by up to 2 pixels, horizontal flip, contrast jitter and pixel noise."""
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,)))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    flip = torch.rand(len(x), 1, 1, 1) < 0.5
    x = torch.where(flip, x.flip(3), x)
    x = x * (0.7 + 0.6 * torch.rand(len(x), 1, 1, 1))
    return x + 0.5 * torch.randn_like(x)


def _backbone(pixels: int = 256, width: int = 128, out: int = 64) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(pixels, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, out), nn.ReLU()
    )


def knn_accuracy(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Leave-one-out 1-nearest-neighbour accuracy under cosine similarity (the usual SSL probe)."""
    z = F.normalize(features, dim=1)
    similarity = z @ z.T - 2 * torch.eye(len(z))
    return (labels[similarity.argmax(1)] == labels).float().mean()


class MoCo(L.LightningModule):
    """Query encoder trained by SGD; key encoder a momentum (EMA) copy updated in the training step under
    ``no_grad``; InfoNCE over the positive key and a 512-key queue (temperature 0.2); cosine LR."""

    def __init__(self, dim: int = 32, queue: int = 512, momentum: float = 0.99, temperature: float = 0.2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = _backbone()
        self.projector = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, dim))
        self.key_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue), dim=0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.hparams.momentum
        for online, target in ((self.backbone, self.key_backbone), (self.projector, self.key_projector)):
            for p, k in zip(online.parameters(), target.parameters()):
                k.mul_(m).add_(p.detach(), alpha=1 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        start = int(self.pointer)
        self.queue[:, start : start + len(keys)] = keys.T
        self.pointer.fill_((start + len(keys)) % self.queue.size(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        q = F.normalize(self.projector(self.backbone(augment(x))), dim=1)
        with torch.no_grad():
            self.momentum_update()
            k = F.normalize(self.key_projector(self.key_backbone(augment(x))), dim=1)
        positive = (q * k).sum(1, keepdim=True)
        negative = q @ self.queue.clone().detach()
        logits = torch.cat((positive, negative), 1) / self.hparams.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long))
        self.enqueue(k)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_knn_acc", knn_accuracy(self.backbone(x), y))

    def configure_optimizers(self) -> Any:
        params = list(self.backbone.parameters()) + list(self.projector.parameters())
        optimizer = torch.optim.SGD(params, lr=0.06, momentum=0.9, weight_decay=5e-4)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)]


class SimSiam(L.LightningModule):
    """Encoder (backbone + BN projector) and a bottleneck predictor; symmetric negative cosine between each
    view's prediction and the other view's stop-gradient projection; SGD with momentum and cosine LR; the
    std of the normalised projection is logged as the collapse check."""

    def __init__(self, dim: int = 32, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = _backbone()
        self.projector = nn.Sequential(
            nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, dim), nn.BatchNorm1d(dim)
        )
        self.predictor = nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, dim))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        z1, z2 = self.projector(self.backbone(augment(x))), self.projector(self.backbone(augment(x)))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean())
        self.log_dict({"train_loss": loss, "z_std": F.normalize(z1.detach(), dim=1).std(0).mean() * z1.size(1) ** 0.5})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_knn_acc", knn_accuracy(self.backbone(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)]


def _data(seed: int) -> tuple[Any, Any]:
    return (
        loader(images(2048, classes=10, noise=1.5, seed=seed), 64, seed=seed),
        loader(images(512, classes=10, noise=1.5, seed=seed + 100), 512, shuffle=False),
    )


def _build_moco(seed: int) -> Run:
    return Run(MoCo(), *_data(seed), trainer={"max_epochs": 6})


def _build_simsiam(seed: int) -> Run:
    return Run(SimSiam(), *_data(seed), trainer={"max_epochs": 6})


PROGRAMS = [
    Program(
        "moco_queue_h",
        "self-supervised learning",
        "MoCo v2 style: query encoder by SGD, key encoder an EMA copy updated in the step outside the optimizer, "
        "a queue of 512 negative keys, InfoNCE at temperature 0.2, cosine LR, k-NN probe in validation",
        _build_moco,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6"),
    ),
    Program(
        "simsiam_h",
        "self-supervised learning",
        "SimSiam: BN projector, bottleneck predictor, symmetric negative cosine with stop-gradient (loss heads "
        "toward -1), SGD with momentum and cosine LR, collapse check and k-NN probe",
        _build_simsiam,
        faults=("lr_div_1e6", "nan_batch", "frozen"),
    ),
]
