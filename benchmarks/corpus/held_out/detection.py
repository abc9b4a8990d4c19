"""Dense one-stage detection in the RetinaNet manner, reduced to its loss: a fully convolutional head scores every
cell of a feature grid for each class and regresses a box offset there; almost every cell is background, so the
classification uses the sigmoid focal loss (alpha 0.25, gamma 2) normalised by the number of positive cells, with
the classification bias initialised to the prior 0.01, plus a smooth-L1 box loss on the positive cells. SGD with
momentum, warm-up then step decay per step."""

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

SIZE, GRID, CLASSES, OBJECTS = 32, 8, 3, 3
CELL = SIZE // GRID


def _scenes(n: int, seed: int, task_seed: int = 61) -> TensorDataset:
    """``(image [n, 1, SIZE, SIZE], classes [n, GRID, GRID] (-1: background), offsets [n, 2, GRID, GRID])``: up to
    OBJECTS small shapes per image (a filled square, a ring, a cross: the class), on noise."""
    templates = torch.zeros(CLASSES, 6, 6)
    templates[0] = 1
    templates[1, 0], templates[1, -1], templates[1, :, 0], templates[1, :, -1] = 1, 1, 1, 1
    templates[2, 2:4], templates[2, :, 2:4] = 1, 1
    s = generator(seed)
    images = torch.randn(n, 1, SIZE, SIZE, generator=s) * 0.5
    classes = torch.full((n, GRID, GRID), -1, dtype=torch.long)
    offsets = torch.zeros(n, 2, GRID, GRID)
    for i in range(n):
        count = int(torch.randint(1, OBJECTS + 1, (1,), generator=s))
        for _ in range(count):
            top, left = (int(v) for v in torch.randint(0, SIZE - 6, (2,), generator=s))
            kind = int(torch.randint(0, CLASSES, (1,), generator=s))
            images[i, 0, top : top + 6, left : left + 6] += 2 * templates[kind]
            row, col = (top + 3) // CELL, (left + 3) // CELL
            classes[i, row, col] = kind
            offsets[i, :, row, col] = torch.tensor([(top + 3) / CELL - row - 0.5, (left + 3) / CELL - col - 0.5])
    return TensorDataset(images, classes, offsets)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss summed over cells and classes (RetinaNet's form)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * ce).sum()


class DenseDetector(L.LightningModule):
    def __init__(self, width: int = 12, lr: float = 0.01, warmup: int = 50) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classify = nn.Conv2d(width, CLASSES, 3, padding=1)
        self.regress = nn.Conv2d(width, 2, 3, padding=1)
        nn.init.normal_(self.classify.weight, std=0.01)
        nn.init.constant_(self.classify.bias, -math.log((1 - 0.01) / 0.01))  # the prior: 1% foreground

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(image)
        return self.classify(features), self.regress(features)

    def _losses(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, classes, offsets = batch
        logits, boxes = self(image)
        positive = classes >= 0
        targets = F.one_hot(classes.clamp(min=0), CLASSES).permute(0, 3, 1, 2).float() * positive[:, None]
        normaliser = positive.sum().clamp(min=1)
        classification = focal_loss(logits, targets) / normaliser
        box = F.smooth_l1_loss(boxes.permute(0, 2, 3, 1)[positive], offsets.permute(0, 2, 3, 1)[positive])
        return classification + box, classification, logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, classification, _ = self._losses(batch)
        self.log_dict({"train_loss": loss, "train_focal": classification})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, _, logits = self._losses(batch)
        classes = batch[1]
        found = (logits.sigmoid().amax(1) > 0.5) & (logits.argmax(1) == classes)
        recall = found[classes >= 0].float().mean()
        false_positives = ((logits.sigmoid().amax(1) > 0.5) & (classes < 0)).float().sum() / len(classes)
        self.log_dict({"val_loss": loss, "val_recall": recall, "val_false_positives": false_positives})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        warmup = self.hparams.warmup

        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup) * (0.1 if step >= 200 else 1.0)

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    return Run(
        DenseDetector(),
        loader(_scenes(1024, seed), 32, seed=seed),
        loader(_scenes(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "focal_dense_h",
        "object detection",
        "a RetinaNet-style dense head: sigmoid focal loss (alpha 0.25, gamma 2) over every grid cell normalised by "
        "the positives, prior-initialised classification bias, smooth-L1 box offsets, SGD with warm-up and a step "
        "decay per step",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
