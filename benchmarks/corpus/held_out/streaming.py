"""A language model pretrained from a stream, as streaming-dataset recipes do: an ``IterableDataset`` with no length
reads shards of documents in a seeded order, joins them with an end-of-document token and cuts the stream into
fixed-length training sequences (packing), so Lightning does not know an epoch's length. The run is set by
``max_steps`` and validated every 60 batches (``val_check_interval``, ``check_val_every_n_epoch=None``) on a few
batches of a held-out stream. A small causal Transformer, AdamW, warm-up then cosine decay per step."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from benchmarks.corpus.data import generator
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH, STEPS, BATCH = 48, 32, 48, 300, 32
EOD = VOCAB  # the end-of-document token


def _documents(shard: int, task_seed: int = 17) -> list[torch.Tensor]:
    """One shard: 40 documents of 10-80 tokens from a sparse Markov chain (the same chain for every shard)."""
    probs = torch.softmax(torch.randn(VOCAB, VOCAB, generator=generator(task_seed)) * 3.0, dim=1)
    g = generator(1000 + shard)
    documents = []
    for _ in range(40):
        n = int(torch.randint(10, 81, (1,), generator=g))
        tokens = torch.empty(n, dtype=torch.long)
        tokens[0] = torch.randint(0, VOCAB, (1,), generator=g)
        for t in range(1, n):
            tokens[t] = torch.multinomial(probs[tokens[t - 1]], 1, generator=g)
        documents.append(tokens)
    return documents


class PackedStream(IterableDataset[torch.Tensor]):
    """Sequences of ``LENGTH + 1`` tokens cut from the shards' documents joined by ``EOD``; no ``__len__``."""

    def __init__(self, shards: list[int], seed: int, shuffle: bool = True) -> None:
        self.shards, self.shuffle, self.g = shards, shuffle, generator(seed)
        self._cache: dict[int, list[torch.Tensor]] = {}

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.shards), generator=self.g).tolist() if self.shuffle else range(len(self.shards))
        buffer: list[torch.Tensor] = []
        held = 0
        for index in order:
            shard = self.shards[index]
            documents = self._cache.setdefault(shard, _documents(shard))
            for d in documents:
                buffer += [d, torch.tensor([EOD])]
                held += len(d) + 1
                while held >= LENGTH + 1:
                    joined = torch.cat(buffer)
                    yield joined[: LENGTH + 1]
                    buffer, held = [joined[LENGTH + 1 :]], len(joined) - LENGTH - 1


class StreamedLM(L.LightningModule):
    def __init__(self, lr: float = 1e-3, warmup: int = 40, total_steps: int = STEPS) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB + 1, WIDTH)
        self.position = nn.Embedding(LENGTH, WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, 4, 4 * WIDTH, dropout=0.1, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB + 1)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(LENGTH), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position.weight[: tokens.size(1)]
        return self.head(self.norm(self.layers(h, mask=self.causal, is_causal=True)))

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.1, betas=(0.9, 0.95))
        warmup, total = self.hparams.warmup, self.hparams.total_steps

        def scale(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        StreamedLM(),
        DataLoader(PackedStream(list(range(12)), seed=seed), batch_size=BATCH),
        DataLoader(PackedStream([100, 101], seed=0, shuffle=False), batch_size=64),
        trainer={
            "max_steps": STEPS,
            "val_check_interval": 60,
            "check_val_every_n_epoch": None,
            "limit_val_batches": 4,
        },
    )


PROGRAMS = [
    Program(
        "streamed_packed_lm_h",
        "language model",
        "pretraining from a stream: an IterableDataset without a length packs shuffled shards' documents into "
        "fixed-length sequences; max_steps, validation every 60 batches; causal Transformer, AdamW, cosine",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "flipped_sign"),
    )
]
