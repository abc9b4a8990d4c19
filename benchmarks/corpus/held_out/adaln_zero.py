"""A diffusion denoiser built as DiT is: small images cut into patches, a Transformer whose blocks are modulated by
the timestep and class through adaLN-Zero (a linear map of the conditioning gives each block a shift, a scale and a
gate per sublayer, initialised to zero, so every block starts as the identity), and a final layer that also starts at
zero. It predicts the noise added at a random step of a linear schedule (mean squared error), with the class dropped
one time in ten for classifier-free guidance. AdamW at a constant rate after a short warm-up."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, PATCH, WIDTH, HEADS, DEPTH, STEPS, EPOCHS, BATCH, SAMPLES = 10, 8, 2, 64, 4, 2, 100, 6, 64, 2048
TOKENS, PATCH_DIM = (SIZE // PATCH) ** 2, PATCH * PATCH


def _timestep_embedding(t: torch.Tensor, width: int) -> torch.Tensor:
    half = width // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNZeroBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(WIDTH, elementwise_affine=False, eps=1e-6)
        self.attention = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(WIDTH, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(approximate="tanh"), nn.Linear(4 * WIDTH, WIDTH))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(WIDTH, 6 * WIDTH))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)
        h = _modulate(self.norm1(x), shift1, scale1)
        x = x + gate1[:, None] * self.attention(h, h, h, need_weights=False)[0]
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(WIDTH, 2 * WIDTH))
        self.linear = nn.Linear(WIDTH, PATCH_DIM)
        for layer in (self.modulation[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm(x), shift, scale))


class DiffusionTransformer(L.LightningModule):
    def __init__(self, lr: float = 1e-3, warmup: int = 20, drop_class: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.patch_in = nn.Linear(PATCH_DIM, WIDTH)
        self.position = nn.Parameter(torch.randn(1, TOKENS, WIDTH) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.SiLU(), nn.Linear(WIDTH, WIDTH))
        self.class_embedding = nn.Embedding(CLASSES + 1, WIDTH)  # the last row: "no class"
        self.blocks = nn.ModuleList([AdaLNZeroBlock() for _ in range(DEPTH)])
        self.final = FinalLayer()
        betas = torch.linspace(1e-4, 0.02, STEPS)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, dim=0))

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(noisy, PATCH, stride=PATCH).transpose(1, 2)  # [B, tokens, patch_dim]
        c = self.time_mlp(_timestep_embedding(t, WIDTH)) + self.class_embedding(label)
        x = self.patch_in(patches) + self.position
        for block in self.blocks:
            x = block(x, c)
        out = self.final(x, c).transpose(1, 2)
        return F.fold(out, (SIZE, SIZE), PATCH, stride=PATCH)

    def _loss(self, batch: Any) -> torch.Tensor:
        images_, label = batch
        t = torch.randint(0, STEPS, (images_.shape[0],), device=images_.device)
        noise = torch.randn_like(images_)
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * images_ + (1 - a).sqrt() * noise
        if self.training:
            dropped = torch.rand(label.shape, device=label.device) < self.hparams.drop_class
            label = torch.where(dropped, torch.full_like(label, CLASSES), label)
        return F.mse_loss(self(noisy, t, label), noise)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.0)
        warmup = self.hparams.warmup
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = images(SAMPLES, CLASSES, SIZE, 1, noise=0.3, seed=seed)
    val = images(512, CLASSES, SIZE, 1, noise=0.3, seed=seed + 100)
    return Run(
        DiffusionTransformer(),
        loader(train, BATCH, seed=seed),
        loader(val, 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "adaln_zero_diffusion_h",
        "generative model",
        "a DiT-style diffusion denoiser: patch tokens, adaLN-Zero modulation by timestep and class (zero-initialised "
        "shifts, scales and gates, a zero final layer), noise prediction by MSE with class dropout; AdamW, warm-up",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
        output_module="final",
    )
]
