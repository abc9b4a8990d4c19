"""A Transformer encoder whose depth is one shared block applied six times (the ALBERT / universal-transformer
pattern): the same parameters run at every depth, so each of them is both the first layer and the last, and their
gradient sums six passes. Sequence classification (does the sequence hold more of token A than of token B), [CLS]
pooling, AdamW with a linear warm-up and linear decay stepped per batch, gradient clipping at 1.0 as such code sets
it."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH, DEPTH, EPOCHS, BATCH = 6, 24, 48, 6, 3, 32
CLS = VOCAB  # an extra token at the front


def _counts(n: int, seed: int) -> TensorDataset:
    """``(tokens [n, LENGTH + 1], label [n])``: random tokens after [CLS]; the label says whether token 0 occurs more
    often than token 1 (ties broken towards 0), which needs attention over the whole sequence; a tenth of the labels
    are flipped, as annotation noise flips them."""
    g = generator(seed)
    body = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    label = ((body == 0).sum(1) >= (body == 1).sum(1)).long()
    noisy = torch.rand(n, generator=g) < 0.1  # annotation noise: a tenth of the labels flipped
    label = torch.where(noisy, 1 - label, label)
    return TensorDataset(torch.cat([torch.full((n, 1), CLS), body], dim=1), label)


class SharedDepthEncoder(L.LightningModule):
    def __init__(self, lr: float = 1e-3, total_steps: int = 384, warmup: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB + 1, WIDTH)
        self.position = nn.Parameter(torch.zeros(LENGTH + 1, WIDTH))
        self.block = nn.TransformerEncoderLayer(WIDTH, 4, 2 * WIDTH, dropout=0.1, batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position
        for _ in range(DEPTH):  # one block, six times
            h = self.block(h)
        return self.head(self.norm(h[:, 0]))

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
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        warmup, total = self.hparams.warmup, self.hparams.total_steps

        def scale(step: int) -> float:
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    return Run(
        SharedDepthEncoder(),
        loader(_counts(4096, seed), BATCH, seed=seed),
        loader(_counts(1024, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "shared_depth_encoder_h",
        "text classification",
        "an ALBERT-style encoder: one Transformer block applied six times (shared weights across depth), [CLS] "
        "pooling, AdamW with linear warm-up and decay, gradient clipping at 1.0",
        _build,
        faults=("lr_x1000", "flipped_sign", "no_zero_grad"),
    )
]
