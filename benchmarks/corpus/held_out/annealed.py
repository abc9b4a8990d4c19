"""Schedules that change what a step computes: a discrete autoencoder whose Gumbel-softmax temperature is
annealed every step, and a GPT trained on sequences that lengthen over its first steps (sequence-length
warm-up), so each step costs more than the one before until the full length is reached."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader, markov_tokens
from benchmarks.corpus.program import Program, Run


class GumbelAutoencoder(L.LightningModule):
    """An MLP encoder to ``codes`` categorical latents of ``choices`` values each, relaxed with Gumbel-softmax at
    a temperature annealed from 1 towards 0.1 per step (the dVAE recipe), an MLP decoder; summed-pixel squared
    error per image plus a small KL to the uniform prior; Adam."""

    def __init__(self, pixels: int = 256, codes: int = 8, choices: int = 16, anneal: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(pixels, 256), nn.ReLU(), nn.Linear(256, codes * choices))
        self.decoder = nn.Sequential(nn.Linear(codes * choices, 256), nn.ReLU(), nn.Linear(256, pixels))

    def _loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch[0].flatten(1)
        h = self.hparams
        logits = self.encoder(x).view(len(x), h.codes, h.choices)
        temperature = max(0.1, math.exp(-h.anneal * self.global_step))
        sample = F.gumbel_softmax(logits, tau=temperature, dim=-1)
        reconstruction = F.mse_loss(self.decoder(sample.flatten(1)), x, reduction="sum") / len(x)
        log_q = F.log_softmax(logits, -1)
        kl = (log_q.exp() * (log_q + math.log(h.choices))).sum((1, 2)).mean()
        return reconstruction + 0.1 * kl, reconstruction

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, reconstruction = self._loss(batch)
        self.log_dict({"train_loss": loss, "train_reconstruction": reconstruction})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, reconstruction = self._loss(batch)
        self.log_dict({"val_loss": loss, "val_reconstruction": reconstruction})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build_gumbel(seed: int) -> Run:
    return Run(
        GumbelAutoencoder(),
        loader(images(2048, noise=0.3, seed=seed), 64, seed=seed),
        loader(images(512, noise=0.3, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 12},
    )


class LengthWarmupGPT(L.LightningModule):
    """A two-layer causal transformer (pre-norm, learned positions) trained on the first ``length(step)`` tokens of
    each sequence, 8 growing to 64 over ``warmup`` steps in steps of 8; AdamW with a linear learning-rate
    warm-up; validated on full-length sequences."""

    def __init__(self, vocab: int = 48, width: int = 48, context: int = 64, warmup: int = 192) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(1, context, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def trained_length(self) -> int:
        h = self.hparams
        grown = 8 + (h.context - 8) * min(1.0, self.global_step / h.warmup)
        return int(grown) // 8 * 8

    def _loss(self, tokens: torch.Tensor) -> torch.Tensor:
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        n = inputs.size(1)
        mask = nn.Transformer.generate_square_subsequent_mask(n)
        hidden = self.blocks(self.embed(inputs) + self.position[:, :n], mask=mask, is_causal=True)
        logits = self.head(self.norm(hidden))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (tokens,) = batch
        loss = self._loss(tokens[:, : self.trained_length() + 1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch[0]))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=2e-3, weight_decay=0.1)
        ramp = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 60))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": ramp, "interval": "step"}}


def _build_gpt(seed: int) -> Run:
    vocab = 48
    return Run(
        LengthWarmupGPT(vocab=vocab),
        loader(markov_tokens(1024, length=64, vocab=vocab, seed=seed), 32, seed=seed),
        loader(markov_tokens(128, length=64, vocab=vocab, seed=seed + 100), 128, shuffle=False),
        trainer={"max_steps": 320, "val_check_interval": 32},
    )


PROGRAMS = [
    Program(
        "gumbel_dvae_h",
        "discrete autoencoder",
        "a Gumbel-softmax autoencoder (8 codes of 16 choices) whose temperature is annealed every step from 1 "
        "towards 0.1, summed-pixel squared error plus a KL to the uniform prior, Adam",
        _build_gumbel,
        faults=("lr_x1000", "frozen", "nan_batch"),
    ),
    Program(
        "gpt_length_warmup_h",
        "language model",
        "a small causal transformer trained on sequences that grow from 8 to 64 tokens over its first 192 steps "
        "(sequence-length warm-up: each step costs more than the last), AdamW with a linear warm-up",
        _build_gpt,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6"),
    ),
]
