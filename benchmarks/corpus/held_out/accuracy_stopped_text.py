"""Sentiment classification with a bag of embeddings, the way metric-object tutorials write it: a torchmetrics
``Accuracy`` updated in ``validation_step`` and logged once an epoch as ``val_acc``, the only validation number; early
stopping waits for a higher accuracy (``mode="max"``, patience 3) and the most accurate epoch is kept. Adam 1e-2,
batches of 64, up to 25 epochs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import BinaryAccuracy

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import sentiment_tokens
from benchmarks.corpus.program import Program, Run

VOCAB = 64


class BagOfEmbeddings(L.LightningModule):
    def __init__(self, dim: int = 32, hidden: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.EmbeddingBag(VOCAB, dim, mode="mean")
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.val_acc = BinaryAccuracy()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(tokens)).squeeze(1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, label = batch
        loss = F.binary_cross_entropy_with_logits(self(tokens), label.float())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, label = batch
        self.val_acc.update(self(tokens), label)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        BagOfEmbeddings(),
        loader(sentiment_tokens(1024, vocab=VOCAB, seed=seed), batch_size=64, seed=seed),
        loader(sentiment_tokens(512, vocab=VOCAB, seed=seed + 100), batch_size=256, shuffle=False),
        trainer={
            "max_epochs": 25,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_acc", mode="max", patience=3),
                ModelCheckpoint(monitor="val_acc", mode="max"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "embedding_bag_val_acc_stopped_h",
        "text classification",
        "a mean bag of embeddings and an MLP head on token sentiment, a torchmetrics accuracy logged as val_acc (no "
        "validation loss), early stopping on val_acc (mode max, patience 3), the most accurate epoch kept, Adam 1e-2",
        _build,
        faults=("frozen", "lr_div_1e6", "flipped_sign"),
    )
]
