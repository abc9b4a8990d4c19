"""One-class anomaly detection with Deep SVDD, as its reference implementation trains it: a conv encoder without any
bias (and batch norm without affine terms), so it cannot map every input onto the centre by a constant, is trained to
pull the embeddings of normal images towards a centre fixed before training (the mean initial embedding, its
near-zero coordinates pushed out to +-0.1). The loss, the mean squared distance to the centre, falls towards zero for
the whole run. Adam with a small weight decay and one learning-rate drop; validation scores normal and anomalous
images by their distance and logs the area under the ROC curve, and the normal images' mean distance as val_loss.

The data: one class of smooth blob templates in noise is normal; the other five classes are the anomalies."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchmetrics.functional.classification import binary_auroc

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

NORMAL_CLASS, CLASSES = 0, 6
CENTRE_EPS = 0.1


class DeepSVDD(L.LightningModule):
    def __init__(self, centre_sample: torch.Tensor) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2, bias=False),
            nn.BatchNorm2d(8, eps=1e-4, affine=False),
            nn.LeakyReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 4, 5, padding=2, bias=False),
            nn.BatchNorm2d(4, eps=1e-4, affine=False),
            nn.LeakyReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 16, bias=False),
        )
        self.register_buffer("centre_sample", centre_sample, persistent=False)
        self.register_buffer("centre", torch.zeros(16))

    def on_train_start(self) -> None:
        """The centre: the mean embedding of normal images before training, as the reference sets it."""
        self.eval()
        with torch.no_grad():
            centre = self.encoder(self.centre_sample).mean(0)
        self.train()
        small = centre.abs() < CENTRE_EPS
        centre[small & (centre < 0)] = -CENTRE_EPS
        centre[small & (centre >= 0)] = CENTRE_EPS
        self.centre.copy_(centre)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        return (self.encoder(x) - self.centre).pow(2).sum(1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.distance(batch[0]).mean()
        self.log("train_svdd", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, anomalous = batch
        score = self.distance(x)
        ranked = score / score.max()  # in [0, 1]: torchmetrics would squash larger scores through a sigmoid
        self.log_dict({"val_loss": score[anomalous == 0].mean(), "val_auroc": binary_auroc(ranked, anomalous)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3, weight_decay=1e-6)
        return [optimizer], [torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[8], gamma=0.1)]


def _normal(n: int, seed: int) -> TensorDataset:
    x, labels = images(n, classes=CLASSES, size=16, noise=0.7, seed=seed).tensors
    return TensorDataset(x[labels == NORMAL_CLASS])


def _mixed(n: int, seed: int) -> TensorDataset:
    x, labels = images(n, classes=CLASSES, size=16, noise=0.7, seed=seed).tensors
    return TensorDataset(x, (labels != NORMAL_CLASS).long())


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = _normal(6000, seed)
    return Run(
        DeepSVDD(train.tensors[0][:256].clone()),
        loader(train, 32, seed=seed),
        loader(_mixed(1200, seed + 100), 1200, shuffle=False),
        trainer={"max_epochs": 12},
    )


PROGRAMS = [
    Program(
        "deep_svdd_one_class_h",
        "anomaly detection",
        "Deep SVDD: a bias-free conv encoder (batch norm without affine terms) pulling normal images' embeddings "
        "towards a centre fixed from the initial embeddings, the loss a mean squared distance that falls towards zero; "
        "Adam with a small weight decay and one step decay; validation AUROC of normal against anomalous images",
        _build,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6", "flipped_sign"),
    )
]
