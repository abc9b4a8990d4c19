"""Fine-tuning a trained CNN on a new task with a new classifier that starts at zero (so the first logits are all
equal and the trunk is not pushed by a random head), the whole network under SGD with momentum at a small rate, the
trunk's BatchNorm statistics kept learning; cosine decay per step, no warm-up. The trunk is trained first in the build
on another task, as a checkpoint would be loaded."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, CHANNELS, WIDTH, EPOCHS, BATCH, SAMPLES = 10, 16, 3, 32, 5, 64, 2048
PRETRAIN_TASK, TASK = 7, 9


def _trunk() -> nn.Sequential:
    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*stage(CHANNELS, WIDTH), *stage(WIDTH, 2 * WIDTH), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _pretrained(seed: int) -> nn.Sequential:
    """The trunk trained on the first task (what a downloaded checkpoint would hold)."""
    trunk, head = _trunk(), nn.Linear(2 * WIDTH, CLASSES)
    x, y = images(2048, CLASSES, SIZE, CHANNELS, noise=2.0, seed=seed + 200, task_seed=PRETRAIN_TASK).tensors
    optimizer = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(120):
        index = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(head(trunk(x[index])), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return trunk


class FineTuned(L.LightningModule):
    def __init__(self, trunk: nn.Sequential, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["trunk"])
        self.trunk = trunk
        self.classifier = nn.Linear(2 * WIDTH, CLASSES)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.trunk(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    trunk = _pretrained(seed)
    data = images(SAMPLES, CLASSES, SIZE, CHANNELS, noise=2.0, seed=seed, task_seed=TASK)
    val = images(512, CLASSES, SIZE, CHANNELS, noise=2.0, seed=seed + 100, task_seed=TASK)
    return Run(
        FineTuned(trunk),
        loader(data, BATCH, seed=seed),
        loader(val, 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "zero_head_sgd_finetune_h",
        "fine-tuning",
        "a trained BatchNorm CNN fine-tuned whole on a new task under a new zero-initialised classifier; SGD with "
        "momentum at 0.01, cosine per step, no warm-up",
        _build,
        faults=("lr_div_1e6", "no_zero_grad", "exp_output"),
        output_module="classifier",
    )
]
