"""Batches that do not weigh the same: a summed loss whose last batch of every epoch is smaller, and a tagger of
variable-length sequences (packed for the RNN) whose batches hold different numbers of real tokens."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils.data import DataLoader, Dataset

from benchmarks.corpus.data import generator, loader, regression
from benchmarks.corpus.program import Program, Run


class SummedLossRegressor(L.LightningModule):
    """An MLP whose loss is the *sum* of squared errors over the batch (``reduction="sum"``, as older examples
    write it) and whose loader keeps the short last batch: the loss and the gradients drop by a third on the last
    step of every epoch. Adam, validated each epoch."""

    def __init__(self, features: int = 16, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y, reduction="sum")
        self.log("train_sse", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build_summed(seed: int) -> Run:
    return Run(
        SummedLossRegressor(),
        loader(regression(1000, noise=0.2, seed=seed), 64, seed=seed),  # 15 batches of 64, then one of 40
        loader(regression(600, noise=0.2, seed=seed + 100), 200, shuffle=False),
        trainer={"max_epochs": 20},
    )


PAD, IGNORE = 0, -100


class TaggedSequences(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Token sequences of 5-40 tokens; each token's tag depends on it and the token before it (a task a
    bidirectional RNN learns), so the loss is a mean over a different number of real tokens in every batch."""

    def __init__(self, n: int, vocab: int = 30, tags: int = 5, seed: int = 0) -> None:
        g = generator(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(5, 41, (1,), generator=g))
            tokens = torch.randint(1, vocab, (length,), generator=g)
            previous = torch.cat((torch.zeros(1, dtype=torch.long), tokens[:-1]))
            self.items.append((tokens, (tokens + 2 * previous) % tags))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[index]


def _pad(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(tokens) for tokens, _ in batch])
    tokens = nn.utils.rnn.pad_sequence([t for t, _ in batch], batch_first=True, padding_value=PAD)
    tags = nn.utils.rnn.pad_sequence([t for _, t in batch], batch_first=True, padding_value=IGNORE)
    return tokens, tags, lengths


class PackedTagger(L.LightningModule):
    """Embedding with a padding index, a bidirectional GRU over packed sequences, a per-token linear head;
    cross-entropy that ignores the padding; Adam."""

    def __init__(self, vocab: int = 30, tags: int = 5, width: int = 48) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=PAD)
        self.rnn = nn.GRU(width, width, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * width, tags)

    def _loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, tags, lengths = batch
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=tokens.size(1))
        logits = self.head(hidden)
        real = tags != IGNORE
        accuracy = (logits.argmax(-1)[real] == tags[real]).float().mean()
        return F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE), accuracy

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, accuracy = self._loss(batch)
        self.log_dict({"val_loss": loss, "val_token_acc": accuracy})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _build_tagger(seed: int) -> Run:
    train = TaggedSequences(768, seed=seed)
    val = TaggedSequences(256, seed=seed + 100)
    return Run(
        PackedTagger(),
        DataLoader(train, batch_size=32, shuffle=True, generator=generator(seed), collate_fn=_pad),
        DataLoader(val, batch_size=128, collate_fn=_pad),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "summed_loss_short_last_batch_h",
        "regression",
        "an MLP trained on the sum (not the mean) of squared errors, the loader keeping a last batch of 40 after "
        "fifteen of 64: the loss drops by a third at the end of every epoch; Adam",
        _build_summed,
        faults=("lr_x1000", "nan_batch", "frozen"),
    ),
    Program(
        "packed_gru_tagger_h",
        "sequence tagging",
        "a bidirectional GRU over packed variable-length sequences (5-40 tokens), cross-entropy over the real "
        "tokens only (ignore_index for the padding), Adam",
        _build_tagger,
        faults=("nan_batch", "lr_x1000", "lr_div_1e6"),
    ),
]
