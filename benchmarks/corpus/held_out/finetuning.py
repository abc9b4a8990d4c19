"""Transfer learning with gradual unfreezing: a backbone pretrained inside ``build`` on a source task, a new
head trained alone first, then the module unfreezes the backbone block by block and hands each block to the
optimizer with ``add_param_group`` at a lower learning rate (what ``BackboneFinetuning`` does, by hand)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


def _backbone() -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU()),
    )


def pretrain(backbone: nn.Sequential, steps: int = 120) -> nn.Sequential:
    """The source task: ten-way classification of clean blobs, Adam, a throw-away head."""
    x, y = images(1024, classes=10, noise=0.5, seed=1234, task_seed=7).tensors
    head = nn.Linear(64, 10)
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(head(backbone(x[idx])), y[idx]).backward()
        optimizer.step()
    return backbone


class GradualUnfreeze(L.LightningModule):
    """Frozen pretrained backbone and a new head under Adam; at ``unfreeze_at`` epochs the module unfreezes
    the next backbone block (deepest first) and adds it to the optimizer as a new param group at lr / 10."""

    def __init__(
        self, backbone: nn.Sequential, classes: int = 4, lr: float = 2e-3, unfreeze_at: tuple[int, ...] = (2, 4)
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone.requires_grad_(False)
        self.head = nn.Linear(64, classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def on_train_epoch_start(self) -> None:
        if self.current_epoch in self.hparams.unfreeze_at:
            block = self.backbone[len(self.backbone) - 1 - self.hparams.unfreeze_at.index(self.current_epoch)]
            block.requires_grad_(True)
            optimizer = self.optimizers().optimizer
            optimizer.add_param_group({"params": list(block.parameters()), "lr": self.hparams.lr / 10})

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
        return torch.optim.Adam(self.head.parameters(), lr=self.hparams.lr)


def _target(n: int, seed: int) -> Any:
    """The target task: new blob classes (another task seed), noisier, four classes."""
    return images(n, classes=4, noise=2.0, seed=seed, task_seed=17)


def _build(seed: int) -> Run:
    return Run(
        GradualUnfreeze(pretrain(_backbone())),
        loader(_target(1024, seed), 32, seed=seed),
        loader(_target(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "finetune_unfreeze_h",
        "transfer learning",
        "a CNN backbone pretrained on a source task, a new head trained alone, then the module unfreezes the "
        "backbone block by block and adds each as a new Adam param group at lr/10 (optimizer.add_param_group)",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
