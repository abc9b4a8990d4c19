"""A GRU sentiment classifier with the callbacks and schedule of many text-classification examples: gradient clipping
at 1.0, Adam under ``ReduceLROnPlateau`` on the validation loss (halving after 2 evaluations without improvement),
``EarlyStopping`` (patience 8) and a ``ModelCheckpoint`` on the same metric."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import sentiment_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH = 64, 24


class GRUSentiment(L.LightningModule):
    def __init__(self, embed: int = 32, hidden: int = 64, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Embedding(VOCAB, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(hidden, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(self.embedding(tokens))
        return self.head(self.dropout(last[-1]))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, label = batch
        loss = F.cross_entropy(self(tokens), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, label = batch
        logits = self(tokens)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        GRUSentiment(),
        loader(sentiment_tokens(1500, length=LENGTH, vocab=VOCAB, seed=seed), 32, seed=seed),
        loader(sentiment_tokens(800, length=LENGTH, vocab=VOCAB, seed=seed + 100), 400, shuffle=False),
        trainer={
            "max_epochs": 30,
            "gradient_clip_val": 1.0,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_loss", mode="min", patience=8),
                ModelCheckpoint(monitor="val_loss", mode="min"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "gru_plateau_early_stopped_h",
        "text classification",
        "a GRU sentiment classifier with gradient clipping, Adam under ReduceLROnPlateau on the validation loss, "
        "EarlyStopping (patience 8) and a best checkpoint on the same metric",
        _build,
        faults=("lr_x1000", "frozen", "no_zero_grad"),
    )
]
