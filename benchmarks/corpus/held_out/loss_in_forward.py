"""A sequence tagger written in the style of model libraries that compute the loss inside ``forward``: ``forward``
takes the labels and returns an output object (a dataclass) with ``loss`` and ``logits``, and ``training_step`` returns
``self(**batch).loss``. Batches are dicts (``input_ids``, ``attention_mask``, ``labels`` with -100 on padding), built
by a collate function that pads to the longest sequence in the batch. Embedding and a bidirectional LSTM, AdamW with
a linear decay per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks.corpus.data import generator
from benchmarks.corpus.program import Program, Run

VOCAB, TAGS, EPOCHS, BATCH = 40, 5, 4, 32


class Sentences(Dataset[dict[str, torch.Tensor]]):
    """Token sequences of 6-24 tokens whose tag is a function of the token and its left neighbour."""

    def __init__(self, n: int, seed: int) -> None:
        g = generator(seed)
        lengths = torch.randint(6, 25, (n,), generator=g)
        self.items = []
        for length in lengths.tolist():
            tokens = torch.randint(1, VOCAB, (length,), generator=g)
            left = torch.cat([torch.zeros(1, dtype=torch.long), tokens[:-1]])
            tags = (tokens * 3 + left) % TAGS
            self.items.append({"input_ids": tokens, "labels": tags})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def pad(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    longest = max(len(item["input_ids"]) for item in items)
    ids = torch.zeros(len(items), longest, dtype=torch.long)
    labels = torch.full((len(items), longest), -100, dtype=torch.long)
    for row, item in enumerate(items):
        ids[row, : len(item["input_ids"])] = item["input_ids"]
        labels[row, : len(item["labels"])] = item["labels"]
    return {"input_ids": ids, "attention_mask": (labels != -100).long(), "labels": labels}


@dataclass
class TaggerOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


class LossInForwardTagger(L.LightningModule):
    def __init__(self, steps: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, 48, padding_idx=0)
        self.lstm = nn.LSTM(48, 48, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(96, TAGS)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> TaggerOutput:
        hidden, _ = self.lstm(self.embed(input_ids))
        logits = self.classifier(hidden)
        loss = None if labels is None else F.cross_entropy(logits.reshape(-1, TAGS), labels.reshape(-1))
        return TaggerOutput(loss, logits)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(**batch)
        assert out.loss is not None
        self.log("train_loss", out.loss)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(**batch)
        mask = batch["labels"] != -100
        accuracy = (out.logits.argmax(-1)[mask] == batch["labels"][mask]).float().mean()
        self.log_dict({"val_loss": out.loss, "val_acc": accuracy})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        steps = self.hparams.steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    train = DataLoader(
        Sentences(2048, seed), batch_size=BATCH, shuffle=True, collate_fn=pad, generator=generator(seed + 1)
    )
    return Run(
        LossInForwardTagger(steps=len(train) * EPOCHS),
        train,
        DataLoader(Sentences(512, seed + 100), batch_size=128, collate_fn=pad),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "loss_in_forward_tagger_h",
        "sequence tagging",
        "a BiLSTM tagger whose forward takes the labels and returns an output dataclass with the loss (model-library "
        "style), dict batches padded by a collate function, AdamW with a per-step linear decay",
        _build,
        faults=("lr_x1000", "flipped_sign", "no_zero_grad"),
    )
]
