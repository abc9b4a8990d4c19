"""A classifier trained on two sources at once, as multi-dataset code does: ``fit`` gets a dict of two loaders of
different lengths, which Lightning combines (``CombinedLoader``'s default ``max_size_cycle``: the small curated
source cycles while the large noisy one runs through once an epoch), so each batch is a dict holding one batch of
each. The loss weights the sources, and each source is validated by a loader of its own (two validation loaders:
Lightning logs ``val_loss/dataloader_idx_0`` and ``_1``). A small CNN, SGD with Nesterov momentum and a cosine decay
over the epochs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

EPOCHS, CURATED_WEIGHT = 6, 0.5


class TwoSourceClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(128, 10),
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        curated = F.cross_entropy(self.net(batch["curated"][0]), batch["curated"][1])
        noisy = F.cross_entropy(self.net(batch["noisy"][0]), batch["noisy"][1])
        loss = CURATED_WEIGHT * curated + (1 - CURATED_WEIGHT) * noisy
        self.log_dict({"train_loss": loss, "train_curated": curated, "train_noisy": noisy})
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)]


def _build(seed: int) -> Run:
    curated = images(384, noise=0.8, seed=seed)
    noisy = images(3072, noise=1.6, seed=seed + 1)
    return Run(
        TwoSourceClassifier(),
        {"curated": loader(curated, 32, seed=seed), "noisy": loader(noisy, 64, seed=seed + 1)},
        [
            loader(images(512, noise=0.8, seed=seed + 100), 256, shuffle=False),
            loader(images(512, noise=1.6, seed=seed + 101), 256, shuffle=False),
        ],
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "two_source_combined_loader_h",
        "image classification",
        "a CNN trained on a dict of two loaders (a small curated source cycled beside a large noisy one, "
        "CombinedLoader max_size_cycle), a weighted sum of the two losses, two validation loaders, SGD Nesterov "
        "with a cosine decay",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
