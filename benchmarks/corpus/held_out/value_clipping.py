"""A GRU sequence classifier trained with ``Trainer(gradient_clip_val=0.5, gradient_clip_algorithm="value")``: every
gradient element is clamped to [-0.5, 0.5], as recurrent code that fears spikes often does, rather than the norm.
Embedding, one-layer GRU over token sequences, the last hidden state to a linear head, cross-entropy, RMSprop with
an exponential decay per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, EPOCHS, BATCH = 32, 20, 5, 32


def labelled_sequences(n: int, seed: int) -> TensorDataset:
    """Markov token sequences labelled by which of two marker tokens appears more often (a count to carry along)."""
    (seq,) = markov_tokens(n, length=LENGTH - 1, vocab=VOCAB, seed=seed).tensors
    noise = torch.randint(0, VOCAB, seq.shape, generator=generator(seed + 3))
    swap = torch.rand(seq.shape, generator=generator(seed + 4)) < 0.3
    seq = torch.where(swap, noise, seq)
    label = ((seq == 3).sum(1) > (seq == 5).sum(1)).long()
    return TensorDataset(seq, label)


class ValueClippedGRU(L.LightningModule):
    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, 32)
        self.gru = nn.GRU(32, 64, batch_first=True)
        self.head = nn.Linear(64, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(self.embed(tokens))
        return self.head(last[-1])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        seq, label = batch
        loss = F.cross_entropy(self(seq), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        seq, label = batch
        logits = self(seq)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.8)]


def _build(seed: int) -> Run:
    return Run(
        ValueClippedGRU(),
        loader(labelled_sequences(2048, seed), BATCH, seed=seed),
        loader(labelled_sequences(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS, "gradient_clip_val": 0.5, "gradient_clip_algorithm": "value"},
    )


PROGRAMS = [
    Program(
        "value_clipped_gru_h",
        "sequence classification",
        "a GRU classifier over token sequences with gradient_clip_algorithm='value' (every element clamped to +-0.5), "
        "RMSprop with ExponentialLR",
        _build,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
    )
]
