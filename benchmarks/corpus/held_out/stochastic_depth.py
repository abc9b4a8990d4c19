"""A small vision Transformer as image-model recipes train it: 4x4 patches and a class token, pre-norm blocks whose
residual branches are dropped per sample (stochastic depth, the rate rising with depth to 0.2), label smoothing,
and AdamW wrapped in Lookahead written in the project: every 6 steps the slow weights move half-way to the fast
ones and the fast weights are reset to them, so the parameters jump back on a fixed cadence. Warm-up then cosine
decay per step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, PATCH, WIDTH, DEPTH, EPOCHS, BATCH, SAMPLES = 10, 16, 4, 64, 4, 8, 64, 2048


class LookaheadAdamW(torch.optim.AdamW):
    """AdamW steps the fast weights; every ``k`` steps the slow ones move ``alpha`` of the way and the fast follow."""

    def __init__(self, params: Iterable[Any], k: int = 6, alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.k, self.alpha, self.fast_steps = k, alpha, 0

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = super().step(closure)
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    if "slow" not in state:
                        state["slow"] = p.detach().clone()
                    state["slow"].lerp_(p, self.alpha)
                    p.copy_(state["slow"])
        return loss


class DropPath(nn.Module):
    """Drops the whole residual branch of a sample with probability ``rate`` (the rest scaled up to match)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = torch.rand(x.size(0), 1, 1, device=x.device) >= self.rate
        return x * keep / (1 - self.rate)


class Block(nn.Module):
    def __init__(self, drop: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.attention = nn.MultiheadAttention(WIDTH, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))
        self.drop = DropPath(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attention(h, h, h, need_weights=False)[0])
        return x + self.drop(self.mlp(self.norm2(x)))


class TinyViT(L.LightningModule):
    def __init__(self, lr: float = 2e-3, warmup: int = 30, total_steps: int = EPOCHS * SAMPLES // BATCH) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.patches = nn.Conv2d(1, WIDTH, PATCH, PATCH)
        self.cls = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.position = nn.Parameter(torch.randn(1, (SIZE // PATCH) ** 2 + 1, WIDTH) * 0.02)
        self.blocks = nn.Sequential(*(Block(0.2 * i / (DEPTH - 1)) for i in range(DEPTH)))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.position
        return self.head(self.norm(self.blocks(tokens))[:, 0])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        decay = [p for n, p in self.named_parameters() if p.ndim > 1 and n not in ("cls", "position")]
        rest = [p for n, p in self.named_parameters() if not (p.ndim > 1 and n not in ("cls", "position"))]
        optimizer = LookaheadAdamW(
            [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=self.hparams.lr
        )
        warmup, total = self.hparams.warmup, self.hparams.total_steps

        def scale(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        TinyViT(),
        loader(images(SAMPLES, CLASSES, SIZE, noise=1.5, seed=seed), BATCH, seed=seed),
        loader(images(1024, CLASSES, SIZE, noise=1.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "droppath_vit_lookahead_h",
        "image classification",
        "a small vision Transformer with stochastic depth (residual branches dropped per sample) and label smoothing, "
        "AdamW wrapped in Lookahead (the weights pulled back to slow weights every 6 steps), warm-up then cosine",
        _build,
        faults=("lr_x1000", "no_zero_grad", "flipped_sign"),
    )
]
