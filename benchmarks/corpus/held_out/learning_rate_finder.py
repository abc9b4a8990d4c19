"""A tabular binary classifier whose learning rate comes from Lightning's ``LearningRateFinder`` callback, as
tutorials teach: before training, the callback sweeps the rate exponentially over 40 batches (its own scheduler,
every other callback switched off, the weights restored afterwards) and writes the suggestion into ``self.lr`` and
the optimizer. Numeric features plus two categorical columns through embeddings, an MLP with batch norm and dropout,
AdamW with a cosine decay over the epochs; validation logs the loss, the accuracy and torchmetrics' AUROC."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateFinder
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from torchmetrics.classification import BinaryAUROC

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

NUMERIC = 12
CARDINALITIES = (20, 8)
EPOCHS = 8


def applicants(n: int, seed: int, task_seed: int = 43) -> TensorDataset:
    """``(numeric [n, NUMERIC], categories [n, 2], default [n])``: the label is drawn from a logistic model with a
    per-category offset and one interaction, so about a third of the cases are positive and none is certain."""
    g_task = generator(task_seed)
    weights = torch.randn(NUMERIC, generator=g_task) * 0.6
    offsets = [torch.randn(c, generator=g_task) for c in CARDINALITIES]
    g = generator(seed)
    numeric = torch.randn(n, NUMERIC, generator=g)
    categories = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDINALITIES], dim=1)
    logit = numeric @ weights + offsets[0][categories[:, 0]] + offsets[1][categories[:, 1]]
    logit = logit + 0.8 * numeric[:, 0] * numeric[:, 1] - 0.7
    default = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return TensorDataset(numeric, categories, default)


class TabularClassifier(L.LightningModule):
    def __init__(self, lr: float = 1e-3, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lr = lr
        self.embeddings = nn.ModuleList(nn.Embedding(c, 4) for c in CARDINALITIES)
        width = NUMERIC + 4 * len(CARDINALITIES)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, 1)
        self.auroc = BinaryAUROC()

    def forward(self, numeric: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        embedded = [embed(categories[:, i]) for i, embed in enumerate(self.embeddings)]
        return self.head(self.mlp(torch.cat([numeric, *embedded], dim=1))).squeeze(1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        numeric, categories, default = batch
        loss = F.binary_cross_entropy_with_logits(self(numeric, categories), default)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        numeric, categories, default = batch
        logits = self(numeric, categories)
        self.auroc(logits, default.long())
        accuracy = ((logits > 0).float() == default).float().mean()
        loss = F.binary_cross_entropy_with_logits(logits, default)
        self.log_dict({"val_loss": loss, "val_acc": accuracy, "val_auroc": self.auroc})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-2)
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
        return {"optimizer": optimizer, "lr_scheduler": decay}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    finder = LearningRateFinder(min_lr=1e-5, max_lr=1.0, num_training_steps=40)
    return Run(
        TabularClassifier(),
        loader(applicants(4096, seed), batch_size=128, seed=seed),
        loader(applicants(1024, seed + 100), batch_size=512, shuffle=False),
        trainer={"max_epochs": EPOCHS, "callbacks": [finder]},
    )


PROGRAMS = [
    Program(
        "lr_finder_tabular_classifier_h",
        "tabular classification",
        "an MLP over numeric features and categorical embeddings whose learning rate LearningRateFinder picks in a "
        "40-batch sweep before training (weights restored after), AdamW with a cosine decay, torchmetrics AUROC",
        _build,
        faults=("nan_batch", "flipped_sign", "frozen"),
    )
]
