"""word2vec's skip-gram with negative sampling: two embedding tables, each step touching only the rows of the
words in its batch (most of the vocabulary gets an all-zero gradient on any one step), negatives drawn from the
unigram distribution to the 3/4 power."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run


def _zipf_corpus(tokens: int, vocab: int, seed: int, task_seed: int = 29) -> torch.Tensor:
    """A token stream with Zipfian word frequencies where each word tends to be followed by one of a few
    "related" words (so contexts carry meaning a skip-gram can learn)."""
    task = generator(task_seed)
    related = torch.randint(0, vocab, (vocab, 4), generator=task)
    frequency = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float)
    s = generator(seed)
    stream = torch.empty(tokens, dtype=torch.long)
    stream[0] = 0
    fresh = torch.multinomial(frequency, tokens, replacement=True, generator=s)
    follow = torch.rand(tokens, generator=s) < 0.7
    pick = torch.randint(0, 4, (tokens,), generator=s)
    for i in range(1, tokens):
        stream[i] = related[stream[i - 1], pick[i]] if follow[i] else fresh[i]
    return stream


def _pairs(stream: torch.Tensor, window: int = 2) -> TensorDataset:
    centres, contexts = [], []
    for offset in range(1, window + 1):
        centres += [stream[:-offset], stream[offset:]]
        contexts += [stream[offset:], stream[:-offset]]
    return TensorDataset(torch.cat(centres), torch.cat(contexts))


class SkipGram(L.LightningModule):
    """Centre and context embeddings (dense gradients, as most tutorials keep them), loss = -log sigmoid(u.v) over
    the true pair and -log sigmoid(-u.n) over ``negatives`` sampled words; Adam. Validated on held-out pairs."""

    def __init__(self, vocab: int = 400, dim: int = 32, negatives: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.centre = nn.Embedding(vocab, dim)
        self.context = nn.Embedding(vocab, dim)
        nn.init.uniform_(self.centre.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)
        self.register_buffer("noise", (1.0 / torch.arange(1, vocab + 1, dtype=torch.float)) ** 0.75)

    def _loss(self, batch: Any) -> torch.Tensor:
        centre, context = batch
        u = self.centre(centre)
        negatives = torch.multinomial(self.noise, len(centre) * self.hparams.negatives, replacement=True)
        n = self.context(negatives.view(len(centre), -1))
        positive = F.logsigmoid((u * self.context(context)).sum(-1))
        negative = F.logsigmoid(-(n @ u.unsqueeze(-1)).squeeze(-1)).sum(-1)
        return -(positive + negative).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=5e-3)


def _build(seed: int) -> Run:
    vocab = 400
    return Run(
        SkipGram(vocab=vocab),
        loader(_pairs(_zipf_corpus(6000, vocab, seed)), 256, seed=seed),
        loader(_pairs(_zipf_corpus(1000, vocab, seed + 100)), 1024, shuffle=False),
        trainer={"max_epochs": 3},
    )


PROGRAMS = [
    Program(
        "skipgram_negative_sampling_h",
        "word embeddings",
        "word2vec skip-gram with 5 negatives from the unigram^0.75 distribution, two dense embedding tables of "
        "which each step touches only its batch's rows, Adam",
        _build,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6"),
    )
]
