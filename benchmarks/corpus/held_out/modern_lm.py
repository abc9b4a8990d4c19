"""A decoder-only language model built the way current open models are: RMSNorm before each sublayer, rotary position
embeddings applied to queries and keys, grouped-query attention (4 query heads share 2 key/value heads) through
``scaled_dot_product_attention``, a SwiGLU feed-forward, the output projection tied to the embedding, and a small
z-loss on the log-partition. AdamW with betas (0.9, 0.95), weight decay on the matrices only, gradient clipping by
the Trainer, warm-up then cosine decay per step."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH, HEADS, KV_HEADS, LAYERS, EPOCHS, BATCH = 64, 32, 64, 4, 2, 2, 4, 64
HEAD = WIDTH // HEADS


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(width)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotary(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of each position's angle per pair of a head's channels."""
    frequencies = 1.0 / 10000 ** (torch.arange(0, HEAD, 2).float() / HEAD)
    angles = torch.outer(torch.arange(length).float(), frequencies)
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class DecoderBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention_norm, self.mlp_norm = RMSNorm(WIDTH), RMSNorm(WIDTH)
        self.query = nn.Linear(WIDTH, HEADS * HEAD, bias=False)
        self.key_value = nn.Linear(WIDTH, 2 * KV_HEADS * HEAD, bias=False)
        self.out = nn.Linear(WIDTH, WIDTH, bias=False)
        self.gate_up = nn.Linear(WIDTH, 2 * 2 * WIDTH, bias=False)
        self.down = nn.Linear(2 * WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.attention_norm(x)
        q = self.query(h).view(b, t, HEADS, HEAD).transpose(1, 2)
        k, v = self.key_value(h).view(b, t, 2, KV_HEADS, HEAD).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        k, v = k.repeat_interleave(HEADS // KV_HEADS, dim=1), v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(b, t, WIDTH))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class SmallDecoder(L.LightningModule):
    def __init__(self, lr: float = 3e-3, warmup: int = 25, total_steps: int = EPOCHS * 4096 // BATCH) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(DecoderBlock() for _ in range(LAYERS))
        self.norm = RMSNorm(WIDTH)
        cos, sin = _rotary(LENGTH)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        t = tokens.size(1)
        for block in self.blocks:
            x = block(x, self.cos[:t], self.sin[:t])
        return self.norm(x) @ self.embed.weight.t()  # tied output projection

    def _losses(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        (sequence,) = batch
        logits = self(sequence[:, :-1]).reshape(-1, VOCAB)
        cross_entropy = F.cross_entropy(logits, sequence[:, 1:].reshape(-1))
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        return cross_entropy, z_loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        cross_entropy, z_loss = self._losses(batch)
        self.log_dict({"train_ce": cross_entropy, "train_z": z_loss})
        return cross_entropy + 1e-4 * z_loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._losses(batch)[0])

    def configure_optimizers(self) -> Any:
        matrices = [p for p in self.parameters() if p.ndim > 1]
        norms = [p for p in self.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": 0.1}, {"params": norms, "weight_decay": 0.0}],
            lr=self.hparams.lr,
            betas=(0.9, 0.95),
        )
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
        SmallDecoder(),
        loader(markov_tokens(4096, LENGTH, VOCAB, seed=seed), BATCH, seed=seed),
        loader(markov_tokens(512, LENGTH, VOCAB, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "rotary_gqa_decoder_h",
        "language model",
        "a decoder built as current open models are: RMSNorm, rotary embeddings, grouped-query attention through "
        "scaled_dot_product_attention, SwiGLU, tied embeddings, a z-loss; AdamW (0.9, 0.95), clipping, cosine",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "flipped_sign"),
    )
]
