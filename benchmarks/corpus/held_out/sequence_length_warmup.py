"""A causal Transformer language model trained with sequence-length warm-up: the first batches are cropped to short
contexts and the crop grows linearly to the full length over the first part of training (the curriculum large-LM
recipes use to get through the unstable start). Each step costs more than the last by design: the step time grows
~5x while the crop grows, then holds. AdamW, a linear warm-up then cosine decay stepped per batch, clipping at 1.0."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH, EPOCHS, BATCH = 48, 96, 64, 3, 16
SHORTEST, GROW_STEPS = 12, 240  # the crop grows from 12 tokens to 96 over the first 240 batches


class CroppedContextLM(L.LightningModule):
    def __init__(self, lr: float = 2e-3, total_steps: int = 384, warmup: int = 24) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Embedding(LENGTH, WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, 4, 4 * WIDTH, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        h = self.embed(tokens) + self.position(torch.arange(length, device=tokens.device))
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        return self.head(self.norm(self.blocks(h, mask=causal, is_causal=True)))

    def context(self) -> int:
        """The crop for the batch about to run: linear from SHORTEST to LENGTH over GROW_STEPS optimizer steps."""
        grown = min(1.0, self.global_step / GROW_STEPS)
        return int(SHORTEST + grown * (LENGTH - SHORTEST))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (sequence,) = batch
        sequence = sequence[:, : self.context() + 1]
        logits = self(sequence[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), sequence[:, 1:].reshape(-1))
        self.log("train_loss", loss)
        self.log("context", float(sequence.shape[1] - 1))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        (sequence,) = batch
        logits = self(sequence[:, :-1])
        self.log("val_loss", F.cross_entropy(logits.reshape(-1, VOCAB), sequence[:, 1:].reshape(-1)))

    def configure_optimizers(self) -> Any:
        decay = [p for n, p in self.named_parameters() if p.ndim >= 2 and "embed" not in n]
        keep = [p for n, p in self.named_parameters() if p.ndim < 2 or "embed" in n]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": keep, "weight_decay": 0.0}],
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
    return Run(
        CroppedContextLM(),
        loader(markov_tokens(2048, length=LENGTH, vocab=VOCAB, seed=seed), BATCH, seed=seed),
        loader(markov_tokens(256, length=LENGTH, vocab=VOCAB, seed=seed + 100), 64, shuffle=False),
        trainer={"max_epochs": EPOCHS, "gradient_clip_val": 1.0, "limit_train_batches": 128},
    )


PROGRAMS = [
    Program(
        "sequence_length_warmup_lm_h",
        "language model",
        "a causal Transformer LM whose training context grows linearly from 12 to 96 tokens over the first 240 "
        "batches (sequence-length warm-up), so each step costs more than the last by design; AdamW, warm-up and "
        "cosine decay per batch, clipping at 1.0",
        _build,
        faults=("lr_x1000", "flipped_sign", "no_zero_grad"),
    )
]
