"""Sequence-to-sequence: a GRU encoder-decoder trained with teacher forcing on a toy translation task."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import reversal_pairs
from benchmarks.corpus.program import Program, Run


class Seq2Seq(L.LightningModule):
    """Encoder GRU whose final state starts a decoder GRU; the decoder reads the shifted target (teacher
    forcing) in training and its own greedy outputs in validation; Adam, ReduceLROnPlateau on val_loss."""

    def __init__(self, vocab: int = 10, embed: int = 32, hidden: int = 96, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.src_embed = nn.Embedding(vocab, embed)
        self.tgt_embed = nn.Embedding(vocab, embed)
        self.encoder = nn.GRU(embed, hidden, batch_first=True)
        self.decoder = nn.GRU(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.src_embed(source))[1]

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits for every target position given the true previous tokens."""
        start = torch.zeros_like(target[:, :1])
        out, _ = self.decoder(self.tgt_embed(torch.cat((start, target[:, :-1]), 1)), self.encode(source))
        return self.out(out)

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, length: int) -> torch.Tensor:
        state = self.encode(source)
        token = torch.zeros_like(source[:, :1])
        tokens = []
        for _ in range(length):
            out, state = self.decoder(self.tgt_embed(token), state)
            token = self.out(out).argmax(-1)
            tokens.append(token)
        return torch.cat(tokens, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        source, target = batch
        logits = self(source, target)
        loss = F.cross_entropy(logits.transpose(1, 2), target)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        source, target = batch
        loss = F.cross_entropy(self(source, target).transpose(1, 2), target)
        decoded = self.greedy(source, target.size(1))
        self.log_dict({"val_loss": loss, "val_token_acc": (decoded == target).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def _build(seed: int) -> Run:
    return Run(
        Seq2Seq(),
        loader(reversal_pairs(1024, length=5, vocab=10, seed=seed), 32, seed=seed),
        loader(reversal_pairs(256, length=5, vocab=10, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "seq2seq_reverse_h",
        "sequence to sequence",
        "a GRU encoder-decoder with teacher forcing on reverse-and-shift translation, Adam, ReduceLROnPlateau "
        "on val_loss, greedy-decoding token accuracy in validation",
        _build,
        faults=("no_zero_grad", "nan_batch", "frozen"),
    )
]
