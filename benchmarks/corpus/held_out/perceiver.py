"""A Perceiver-style classifier: a small learned latent array cross-attends to a long input array (every pixel of an
image as a token with Fourier features of its position), then self-attends; the latents' mean is classified. The
input array is never processed by itself, only read through the latents. AdamW with a linear warm-up and cosine decay
stepped per batch, as Perceiver recipes do."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

SIZE, BANDS = 16, 4


def _positions() -> torch.Tensor:
    """``[SIZE*SIZE, 2 + 4*BANDS]``: each pixel's (y, x) in [-1, 1] with sines and cosines of it at 1..2^(BANDS-1)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    grid = torch.stack([ys.flatten(), xs.flatten()], 1)
    scaled = torch.cat([grid * math.pi * 2**b for b in range(BANDS)], 1)
    return torch.cat([grid, torch.sin(scaled), torch.cos(scaled)], 1)


class Perceiver(L.LightningModule):
    """16 latents of 48; one cross-attention block, two latent self-attention blocks; AdamW 1e-3, 10% warm-up."""

    def __init__(self, latents: int = 16, dim: int = 48, classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("positions", _positions())
        self.embed = nn.Linear(1 + self.positions.shape[1], dim)
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.cross = nn.MultiheadAttention(dim, 1, batch_first=True)
        self.cross_norm, self.input_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        block = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.process = nn.TransformerEncoder(block, 2, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.flatten(1).unsqueeze(2)  # [B, 256, 1]
        tokens = self.input_norm(
            self.embed(torch.cat([pixels, self.positions.expand(x.shape[0], -1, -1)], 2))
        )  # [B, 256, dim]
        z = self.latents.expand(x.shape[0], -1, -1)
        z = z + self.cross(self.cross_norm(z), tokens, tokens, need_weights=False)[0]
        z = z + self.cross_mlp(z)
        return self.head(self.process(z).mean(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.05)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = max(1, total // 10)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    return Run(
        Perceiver(),
        loader(images(1536, noise=0.6, seed=seed), 32, seed=seed),
        loader(images(256, noise=0.6, seed=seed + 100), 128, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "perceiver_latents_h",
        "Perceiver (latent cross-attention)",
        "a Perceiver-style classifier: 16 learned latents cross-attend to 256 pixel tokens with Fourier position "
        "features, two latent self-attention blocks, mean-pooled head; AdamW with warm-up and per-step cosine decay",
        _build,
        faults=("lr_x1000", "flipped_sign", "frozen"),
    )
]
