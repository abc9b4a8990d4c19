"""A mixture-of-experts language model: top-2 routing over eight expert MLPs, a load-balancing auxiliary loss,
experts that get no token in a batch skipped (their parameters get no gradient that step)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH, EXPERTS = 64, 16, 48, 8


def _fibonacci_tokens(n: int, seed: int) -> TensorDataset:
    """Sequences where each token is the sum of the two before (mod VOCAB), with 10% of tokens replaced at random."""
    g = generator(seed)
    tokens = torch.randint(0, VOCAB, (n, LENGTH + 1), generator=g)
    for t in range(2, LENGTH + 1):
        tokens[:, t] = (tokens[:, t - 1] + tokens[:, t - 2]) % VOCAB
    noise = torch.rand(tokens.shape, generator=g) < 0.1
    return TensorDataset(torch.where(noise, torch.randint(0, VOCAB, tokens.shape, generator=g), tokens))


class MixtureOfExperts(nn.Module):
    """Token-level top-k routing; the Switch Transformer's load-balancing term is kept in ``aux``."""

    def __init__(self, top_k: int = 2) -> None:
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(WIDTH, EXPERTS, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH)) for _ in range(EXPERTS)
        )
        self.aux = torch.tensor(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(-1, x.shape[-1])
        probs = self.router(h).softmax(-1)
        weights, chosen = probs.topk(self.top_k, -1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue  # an expert no token chose this batch: skipped, as the usual loop does
            out.index_add_(0, rows, expert(h[rows]) * weights[rows, slot, None])
        load = torch.zeros(EXPERTS, device=h.device).scatter_add_(0, chosen[:, 0], torch.ones(len(h), device=h.device))
        self.aux = EXPERTS * (load / len(h) * probs.mean(0)).sum()
        return out.reshape(x.shape)


class MoELanguageModel(L.LightningModule):
    """One pre-norm causal attention block whose MLP is the mixture; cross-entropy + 0.01 x load balancing, AdamW."""

    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Embedding(LENGTH, WIDTH)
        self.attention = nn.MultiheadAttention(WIDTH, 4, batch_first=True)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.moe = MixtureOfExperts()
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        h = self.embed(tokens) + self.position(torch.arange(n, device=tokens.device))
        a = self.norm1(h)
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=tokens.device)
        h = h + self.attention(a, a, a, attn_mask=mask, need_weights=False)[0]
        h = h + self.moe(self.norm2(h))
        return self.head(self.norm3(h))

    def cross_entropy(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(tokens[:, :-1]).reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.cross_entropy(batch[0]) + 0.01 * self.moe.aux
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.cross_entropy(batch[0]))

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def _moe(seed: int) -> Run:
    return Run(
        MoELanguageModel(),
        loader(_fibonacci_tokens(1152, seed), 32, seed=seed),
        loader(_fibonacci_tokens(256, seed + 100), 128, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "moe_top2_lm",
        "language model",
        "a causal attention block whose MLP is a top-2 mixture of 8 experts, load-balancing auxiliary loss, empty "
        "experts skipped, AdamW",
        _moe,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
