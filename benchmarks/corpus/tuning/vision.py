"""Image classification: the MNIST-style CNN of the Lightning quickstart and a CIFAR-style ResNet."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class ConvClassifier(L.LightningModule):
    """Conv-ReLU-MaxPool twice, then Linear; Adam; torchmetrics accuracy per epoch; validation each epoch."""

    def __init__(self, classes: int = 10, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 3 * 3, classes),
        )
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _cnn(seed: int) -> Run:
    return Run(
        ConvClassifier(),
        loader(images(1024, size=12, noise=3.0, seed=seed), 32, seed=seed),
        loader(images(512, size=12, noise=3.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 conv-BN, identity or 1x1-conv shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class ResNetClassifier(L.LightningModule):
    """CIFAR-10 recipe: SGD lr 0.1, momentum 0.9, weight decay 5e-4, MultiStepLR x0.1 at fixed epochs."""

    def __init__(self, lr: float = 0.1, milestones: tuple[int, ...] = (3, 5)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = ResNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(self.hparams.milestones), gamma=0.1)
        return [optimizer], [scheduler]


def _resnet(seed: int) -> Run:
    return Run(
        ResNetClassifier(),
        loader(images(768, size=8, channels=3, noise=3.5, seed=seed), 32, seed=seed),
        loader(images(256, size=8, channels=3, noise=3.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "cnn_classifier",
        "image classification",
        "conv-pool-conv-pool-linear on 12x12 images, Adam 1e-3, torchmetrics accuracy, validation each epoch",
        _cnn,
        faults=("lr_x1000", "nan_batch", "frozen"),
    ),
    Program(
        "resnet_multistep",
        "image classification",
        "a small ResNet with BatchNorm and residual blocks, SGD momentum 0.9 + weight decay, MultiStepLR",
        _resnet,
        faults=("lr_x1000", "no_zero_grad", "flipped_sign"),
    ),
]
