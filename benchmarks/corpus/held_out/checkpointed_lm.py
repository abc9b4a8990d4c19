"""A GPT-style language model as large-model code writes it: activation checkpointing on every block (the forward
runs again during backward), the output head tied to the token embedding, AdamW with weight decay on matrices
only, linear warm-up then cosine decay per step."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH = 64, 24, 48


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.attention = nn.MultiheadAttention(WIDTH, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.norm1(x)
        x = x + self.attention(a, a, a, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CheckpointedGPT(L.LightningModule):
    def __init__(self, layers: int = 2, lr: float = 3e-3, warmup: int = 20) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Parameter(torch.zeros(LENGTH, WIDTH))
        self.blocks = nn.ModuleList(Block() for _ in range(layers))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.head.weight = self.embed.weight  # tied: one tensor, two uses
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=tokens.device)
        x = self.embed(tokens) + self.position[:n]
        for block in self.blocks:
            x = checkpoint(block, x, mask, use_reentrant=False) if self.training else block(x, mask)
        return self.head(self.norm(x))

    def lm_loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x).reshape(-1, VOCAB), y.reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.lm_loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.lm_loss(batch))

    def configure_optimizers(self) -> Any:
        matrices = [p for p in self.parameters() if p.dim() >= 2]
        others = [p for p in self.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
            lr=self.hparams.lr,
            betas=(0.9, 0.95),
        )
        total, warmup = self.trainer.estimated_stepping_batches, self.hparams.warmup

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _gpt(seed: int) -> Run:
    def pairs(n: int, s: int) -> Any:
        tokens = markov_tokens(n, LENGTH, VOCAB, seed=s).tensors[0]
        return torch.utils.data.TensorDataset(tokens[:, :-1], tokens[:, 1:])

    return Run(
        CheckpointedGPT(),
        loader(pairs(768, seed), 32, seed=seed),
        loader(pairs(128, seed + 100), 64, shuffle=False),
        trainer={"max_epochs": 5, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "gpt_checkpointed_tied_h",
        "language model",
        "a 2-block GPT with activation checkpointing, tied embedding/head, AdamW with decay on matrices only, "
        "warm-up + cosine, clipping",
        _gpt,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
