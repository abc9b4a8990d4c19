"""Character-level language modelling: the GRU char-RNN of the classic tutorials, Adam, gradient clipping."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run


class CharGRU(L.LightningModule):
    """Embedding, GRU, linear decoder to the vocabulary; next-token cross-entropy, Adam, perplexity
    on a validation set every epoch."""

    def __init__(self, vocab: int = 48, embed: int = 32, hidden: int = 64, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)

    def _loss(self, batch: Any) -> torch.Tensor:
        (tokens,) = batch
        logits = self(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log_dict({"val_loss": loss, "val_ppl": torch.exp(loss)})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _build(seed: int) -> Run:
    vocab = 48
    return Run(
        CharGRU(vocab=vocab),
        loader(markov_tokens(512, length=16, vocab=vocab, seed=seed), 32, seed=seed),
        loader(markov_tokens(128, length=16, vocab=vocab, seed=seed + 100), 128, shuffle=False),
        trainer={"max_epochs": 8, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "char_gru_lm_h",
        "language model",
        f"a GRU char-RNN, next-token cross-entropy (starts near ln(48) = {math.log(48):.2f}), Adam, "
        "gradient clipping at norm 1, validation perplexity",
        _build,
        faults=("nan_batch", "lr_div_1e6", "lr_x1000"),
    )
]
