"""A Set Transformer (Lee et al.) for a set-level prediction on sets of varying size: each example is a set of 2-D
points drawn from one to four Gaussian clusters, 16 to 48 points long, padded to 48 with a key padding mask; the model
counts the clusters (a 4-way classification, permutation invariant, that needs the points to interact). Encoder: two
induced set attention blocks (16 learned inducing points attend to the masked set, then the set attends back to
them), each attention block a multi-head attention with a residual and LayerNorm followed by a residual feed-forward
and LayerNorm; decoder: pooling by multihead attention (one learned seed vector attending over the masked set) and a
linear head. Adam 1e-3 with a short linear warm-up, then a linear decay, stepped every batch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

MAX_SIZE, MIN_SIZE, MAX_CLUSTERS, GRID = 48, 16, 4, 4


def _sets(n: int, seed: int) -> TensorDataset:
    """``(points [n, MAX_SIZE, 2], padding [n, MAX_SIZE] (True past the set's end), clusters - 1 [n])``.

    Cluster centres sit in distinct cells of a jittered 4x4 grid (so clusters stay apart); the points of a set are
    shared evenly among its clusters, shuffled, scaled and shifted as a whole, and zero past the set's size."""
    g = generator(seed)
    k = torch.randint(1, MAX_CLUSTERS + 1, (n,), generator=g)
    size = torch.randint(MIN_SIZE, MAX_SIZE + 1, (n,), generator=g)
    cells = torch.rand(n, GRID * GRID, generator=g).argsort(1)[:, :MAX_CLUSTERS]
    centres = torch.stack([cells // GRID, cells % GRID], -1).float() * 2.0
    centres = centres + (torch.rand(n, MAX_CLUSTERS, 2, generator=g) - 0.5) * 0.8
    slot = torch.arange(MAX_SIZE).expand(n, MAX_SIZE)
    member = slot % k.unsqueeze(1)  # point i of a set belongs to cluster i mod k
    order = torch.rand(n, MAX_SIZE, generator=g).masked_fill(slot >= size.unsqueeze(1), 2.0).argsort(1)
    member = member.gather(1, order)  # the real points shuffled, still first
    points = centres.gather(1, member.unsqueeze(2).expand(n, MAX_SIZE, 2))
    points = points + 0.3 * torch.randn(n, MAX_SIZE, 2, generator=g)
    scale = 0.8 + 0.4 * torch.rand(n, 1, 1, generator=g)
    points = (points - GRID + 1) * scale / GRID + 0.5 * torch.randn(n, 1, 2, generator=g)
    padding = slot >= size.unsqueeze(1)
    points = points.masked_fill(padding.unsqueeze(2), 0.0)
    return TensorDataset(points, padding, k - 1)


class MAB(nn.Module):
    """Multihead attention block: ``H = LN(X + MHA(X, Y, Y))``, ``out = LN(H + rFF(H))``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        attended, _ = self.attention(x, y, y, key_padding_mask=padding, need_weights=False)
        h = self.norm1(x + attended)
        out: torch.Tensor = self.norm2(h + self.ff(h))
        return out


class ISAB(nn.Module):
    """Induced set attention block: learned inducing points attend to the (masked) set, the set attends back."""

    def __init__(self, dim: int, heads: int, inducing: int) -> None:
        super().__init__()
        self.inducing = nn.Parameter(torch.empty(1, inducing, dim))
        nn.init.xavier_uniform_(self.inducing)
        self.gather = MAB(dim, heads)
        self.broadcast = MAB(dim, heads)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        summary = self.gather(self.inducing.expand(x.size(0), -1, -1), x, padding)
        out: torch.Tensor = self.broadcast(x, summary)
        return out


class PMA(nn.Module):
    """Pooling by multihead attention: learned seed vectors attend over the row-wise transformed, masked set."""

    def __init__(self, dim: int, heads: int, seeds: int = 1) -> None:
        super().__init__()
        self.seeds = nn.Parameter(torch.empty(1, seeds, dim))
        nn.init.xavier_uniform_(self.seeds)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.mab = MAB(dim, heads)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.mab(self.seeds.expand(x.size(0), -1, -1), self.ff(x), padding)
        return pooled


class SetTransformer(L.LightningModule):
    def __init__(self, dim: int = 64, heads: int = 4, inducing: int = 16, blocks: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(2, dim)
        self.encoder = nn.ModuleList(ISAB(dim, heads, inducing) for _ in range(blocks))
        self.pool = PMA(dim, heads)
        self.head = nn.Linear(dim, MAX_CLUSTERS)

    def forward(self, points: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        x = self.embed(points)
        for block in self.encoder:
            x = block(x, padding)
        logits: torch.Tensor = self.head(self.pool(x, padding).squeeze(1))
        return logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        points, padding, label = batch
        loss = F.cross_entropy(self(points, padding), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        points, padding, label = batch
        logits = self(points, padding)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = max(1, total // 20)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        SetTransformer(),
        loader(_sets(3072, seed), 64, seed=seed),
        loader(_sets(1024, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "set_transformer_pooling_h",
        "set learning",
        "a Set Transformer counting the clusters of padded, masked 2-D point sets of varying size: two induced set "
        "attention blocks (multi-head attention, residual LayerNorm, feed-forward), pooling by multihead attention "
        "with a learned seed, a linear head; Adam with a per-step linear warm-up and decay",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
