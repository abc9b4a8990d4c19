"""A classifier trained on a stream where only some rows carry a label (the rest are -1, kept for a later
semi-supervised stage), as code over partly annotated logs does. ``training_step`` returns ``None`` for a batch with
fewer than two labelled rows, a guard against a loss over one example: Lightning then skips that batch's backward and
optimizer step (about one batch in seven here). Cross-entropy over the labelled rows, dropout, AdamW with a
``StepLR``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, BATCH, LABELLED, NOISE = 6, 12, 16, 0.2, 4.0


def partly_labelled(n: int, seed: int) -> TensorDataset:
    """Images whose label is kept with probability ``LABELLED`` and -1 otherwise."""
    x, y = images(n, classes=CLASSES, size=SIZE, noise=NOISE, seed=seed).tensors
    keep = torch.rand(n, generator=generator(seed + 7)) < LABELLED
    return TensorDataset(x.flatten(1), torch.where(keep, y, torch.full_like(y, -1)))


class SparseLabelClassifier(L.LightningModule):
    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(SIZE * SIZE, 96), nn.GELU(), nn.Linear(96, 48), nn.GELU(), nn.Linear(48, CLASSES)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        labelled = y >= 0
        if int(labelled.sum()) < 2:
            return None  # too few labels for a loss worth a step: Lightning skips the batch
        loss = F.cross_entropy(self.net(x[labelled]), y[labelled])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)]


def _build(seed: int) -> Run:
    val_x, val_y = images(1024, classes=CLASSES, size=SIZE, noise=NOISE, seed=seed + 100).tensors
    return Run(
        SparseLabelClassifier(),
        loader(partly_labelled(6144, seed), BATCH, seed=seed),
        loader(TensorDataset(val_x.flatten(1), val_y), 256, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "sparse_labels_skipped_batches_h",
        "image classification",
        "a classifier on a partly labelled stream whose training_step returns None for a batch with fewer than two "
        "labelled rows (Lightning skips it), dropout, AdamW with StepLR",
        _build,
        faults=("lr_x1000", "frozen", "flipped_sign"),
    )
]
