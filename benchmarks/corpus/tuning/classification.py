"""Classification recipes on top of a plain classifier: label smoothing, noisy labels, the overfit sanity run."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run
from benchmarks.corpus.tuning.shared import conv_block, flipped_labels


class SmoothedClassifier(L.LightningModule):
    """timm/torchvision recipe: CE with ``label_smoothing=0.1``, SGD Nesterov, cosine annealing per epoch."""

    def __init__(self, classes: int = 10, lr: float = 0.05, epochs: int = 6) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(conv_block(1, 8), nn.MaxPool2d(2), conv_block(8, 16), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 4, classes))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.criterion(self(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(
            self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True, weight_decay=1e-4
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.epochs),
        }


def _smoothing(seed: int) -> Run:
    return Run(
        SmoothedClassifier(),
        loader(images(768, size=8, noise=2.5, seed=seed), 32, seed=seed),
        loader(images(256, size=8, noise=2.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


class NoisyLabelClassifier(L.LightningModule):
    """An MLP on flattened images trained on 30% flipped labels with RMSprop; validation on clean labels."""

    def __init__(self, classes: int = 10, lr: float = 3e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(144, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, classes)
        )
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": self.val_acc})

    def configure_optimizers(self) -> Any:
        return torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr)


def _noisy(seed: int) -> Run:
    train = flipped_labels(images(2048, size=12, noise=5.0, seed=seed), 0.3, 10, seed)
    return Run(
        NoisyLabelClassifier(),
        loader(train, 64, seed=seed),
        loader(images(512, size=12, noise=5.0, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 6},
    )


class SanityClassifier(L.LightningModule):
    """The debugging step every guide recommends: ``overfit_batches=1`` must drive the loss to ~0."""

    def __init__(self, classes: int = 10, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(144, 64), nn.ReLU(), nn.Linear(64, classes))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _overfit(seed: int) -> Run:
    return Run(
        SanityClassifier(),
        loader(images(512, size=12, noise=3.0, seed=seed), 32, seed=seed),
        trainer={"overfit_batches": 1, "max_epochs": 150},
    )


PROGRAMS = [
    Program(
        "label_smoothing_nesterov",
        "image classification",
        "a conv-BN classifier with cross_entropy(label_smoothing=0.1), SGD Nesterov and per-epoch cosine annealing",
        _smoothing,
        faults=("no_zero_grad", "flipped_sign", "frozen"),
    ),
    Program(
        "noisy_labels_mlp",
        "image classification",
        "an MLP trained with RMSprop on 30% flipped labels, validated on clean labels",
        _noisy,
        faults=("nan_batch", "frozen", "lr_div_1e6"),
    ),
    Program(
        "overfit_one_batch",
        "debugging run",
        "the overfit_batches=1 sanity check of a small MLP classifier with Adam, 150 epochs of one batch",
        _overfit,
        faults=("lr_div_1e6", "frozen", "flipped_sign"),
    ),
]
