"""BERT-style masked-language-model pre-training in miniature: token plus learned position embeddings with a
LayerNorm, two post-LayerNorm transformer encoder layers (width 64, four heads, GELU), and the MLM head (dense, GELU,
LayerNorm, then a decoder whose weight is the token embedding, tied, with its own bias). The masking is dynamic, drawn
anew every step as the standard MLM data collator does it: 15% of positions are chosen; of those 80% become [MASK],
10% a random token and 10% stay as they are; labels are -100 everywhere else and the loss is the cross-entropy that
ignores them. AdamW (weight decay 0.01, none on biases and LayerNorm weights, grouped by parameter name as the
Transformers examples do), a linear warm-up then a linear decay stepped every optimizer step, gradient clipping at
norm 1 by the Trainer. Validation: the masked-LM loss on held-out sequences under one fixed mask."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH = 64, 16
MASK_ID = VOCAB  # one special token past the ordinary vocabulary
IGNORE = -100


def mask_tokens(
    tokens: torch.Tensor, probability: float = 0.15, g: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The collator's masking: ``(inputs, labels)``, labels ``-100`` where nothing was chosen."""
    chosen = torch.rand(tokens.shape, generator=g, device=tokens.device) < probability
    labels = tokens.masked_fill(~chosen, IGNORE)
    roll = torch.rand(tokens.shape, generator=g, device=tokens.device)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    random_tokens = torch.randint(0, VOCAB, tokens.shape, generator=g, device=tokens.device)
    inputs = tokens.masked_fill(to_mask, MASK_ID)
    inputs = torch.where(to_random, random_tokens, inputs)
    return inputs, labels


class EncoderLayer(nn.Module):
    """A BERT layer: self-attention, residual, LayerNorm; feed-forward (GELU), residual, LayerNorm."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.attn_norm = nn.LayerNorm(width, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.ff_norm = nn.LayerNorm(width, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout.p if self.training else 0.0)
        h = self.attn_norm(h + self.dropout(self.attn_out(attended.transpose(1, 2).reshape(b, t, w))))
        out: torch.Tensor = self.ff_norm(h + self.dropout(self.ff(h)))
        return out


class MaskedLM(L.LightningModule):
    def __init__(self, width: int = 64, layers: int = 2, heads: int = 4, lr: float = 5e-3, warmup: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lr, self.warmup = lr, warmup
        self.token_embedding = nn.Embedding(VOCAB + 1, width)
        self.position_embedding = nn.Embedding(LENGTH, width)
        self.embedding_norm = nn.LayerNorm(width, eps=1e-12)
        self.embedding_dropout = nn.Dropout(0.1)
        self.layers = nn.ModuleList(EncoderLayer(width, heads, 0.1) for _ in range(layers))
        self.transform_dense = nn.Linear(width, width)
        self.transform_norm = nn.LayerNorm(width, eps=1e-12)
        self.decoder_bias = nn.Parameter(torch.zeros(VOCAB + 1))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation: normal(0, 0.02) weights, zero biases, LayerNorm at identity."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(inputs.size(1), device=inputs.device)
        h = self.embedding_norm(self.token_embedding(inputs) + self.position_embedding(positions))
        h = self.embedding_dropout(h)
        for layer in self.layers:
            h = layer(h)
        # the decoder shares its weight with the token embedding
        h = self.transform_norm(F.gelu(self.transform_dense(h)))
        return F.linear(h, self.token_embedding.weight, self.decoder_bias)

    def _mlm_loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(inputs)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=IGNORE)
        chosen = labels != IGNORE
        accuracy = (logits.argmax(-1)[chosen] == labels[chosen]).float().mean()
        return loss, accuracy

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (tokens,) = batch
        inputs, labels = mask_tokens(tokens)  # a fresh mask every step
        loss, _ = self._mlm_loss(inputs, labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        inputs, labels = batch
        loss, accuracy = self._mlm_loss(inputs, labels)
        self.log_dict({"val_loss": loss, "val_mlm_acc": accuracy})

    def configure_optimizers(self) -> Any:
        no_decay = ("bias", "norm.weight")
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.999), eps=1e-6)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = max(1, int(self.warmup * total))

        def linear_warmup_decay(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _validation(n: int, seed: int) -> TensorDataset:
    """Held-out sequences masked once, with a fixed generator: the same positions every evaluation."""
    (tokens,) = markov_tokens(n, length=LENGTH - 1, vocab=VOCAB, seed=seed).tensors
    inputs, labels = mask_tokens(tokens, g=generator(seed + 1))
    return TensorDataset(inputs, labels)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        MaskedLM(),
        loader(markov_tokens(8192, length=LENGTH - 1, vocab=VOCAB, seed=seed), 128, seed=seed),
        loader(_validation(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "masked_language_model_h",
        "masked language model",
        "BERT-style MLM pre-training of a 2-layer post-LN transformer encoder with learned positions and a decoder "
        f"tied to the token embedding; dynamic 15% masking (80/10/10), loss from ln({VOCAB + 1}) = "
        f"{math.log(VOCAB + 1):.2f}; AdamW without decay on biases and LayerNorm weights, per-step linear warm-up "
        "and decay, clipping at norm 1; validation MLM loss under a fixed mask",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
