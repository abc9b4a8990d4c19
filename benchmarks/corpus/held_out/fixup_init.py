"""A residual CNN trained without normalisation layers under Fixup initialisation: each residual branch's last
convolution and the classifier start at zero, the first convolution of a branch is scaled down by the square root of
the number of branches, and scalar biases (zero) and a scalar multiplier (one) sit around each convolution. SGD with
momentum and weight decay at a learning rate of 0.1, divided by ten at set epochs (``MultiStepLR`` per epoch)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, CHANNELS, WIDTH, BRANCHES, EPOCHS, BATCH, SAMPLES = 10, 16, 3, 32, 3, 6, 64, 2048


class FixupBlock(nn.Module):
    """conv-relu-conv with a scalar bias before each convolution and activation, a scalar multiplier at the end."""

    def __init__(self, branches: int) -> None:
        super().__init__()
        self.bias1a, self.bias1b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
        self.bias2a, self.bias2b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
        self.scale = nn.Parameter(torch.ones(()))
        self.conv1 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        fan_in = self.conv1.weight[0].numel()
        nn.init.normal_(self.conv1.weight, std=math.sqrt(2 / fan_in) * branches**-0.5)
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        h = self.conv2(h + self.bias2a) * self.scale + self.bias2b
        return F.relu(x + h)


class FixupResNet(L.LightningModule):
    def __init__(self, lr: float = 0.05, milestones: tuple[int, ...] = (3, 5)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = nn.Conv2d(CHANNELS, WIDTH, 3, stride=2, padding=1, bias=False)
        self.blocks = nn.Sequential(*[FixupBlock(BRANCHES) for _ in range(BRANCHES)])
        self.head_bias = nn.Parameter(torch.zeros(()))
        self.head = nn.Linear(WIDTH, CLASSES)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.relu(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)) + self.head_bias)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.hparams.milestones), gamma=0.1)
        return [optimizer], [schedule]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        FixupResNet(),
        loader(images(SAMPLES, CLASSES, SIZE, CHANNELS, noise=2.5, seed=seed), BATCH, seed=seed),
        loader(images(512, CLASSES, SIZE, CHANNELS, noise=2.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "fixup_resnet_h",
        "image classification",
        "a residual CNN with no normalisation under Fixup initialisation (zero last convolution per branch and zero "
        "classifier, scalar biases and multipliers); SGD at 0.1 with momentum and weight decay, MultiStepLR per epoch",
        _build,
        faults=("lr_div_1e6", "nan_batch", "flipped_sign"),
        output_module="head",
    )
]
