"""An S4D-style diagonal state-space sequence classifier, as long-range sequence benchmarks train it: token embeddings,
pre-LayerNorm residual blocks whose mixing layer is a diagonal SSM per channel (a learnable log time step drawn in
[log 1e-3, log 1e-1], a diagonal state matrix -exp(log_A_real) + i*A_imag with the S4D-Lin initialisation -1/2 + i*pi*n,
complex B and C, a skip D), its convolution kernel computed from the zero-order-hold discretisation and applied with
an FFT convolution; then GELU, dropout and a pointwise linear. Mean pooling over the sequence and a linear head.
AdamW with two parameter groups as the S4 code sets them up: the SSM's log_dt, A and B at 1e-3 without weight
decay, everything else (C, D, the linear layers) at 1e-2 with decay 0.05; a linear warm-up then a cosine decay stepped
every optimizer step. The task is long-range: in 256 noise tokens the label is the kind of a marker in the first 32
positions, and decoy markers of any kind come in the last 64, at least 160 positions after it."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

LENGTH, KINDS, NOISE, DECOYS = 256, 4, 16, 2
VOCAB = KINDS + NOISE  # marker tokens 0-3, then noise tokens
WINDOW = 32  # the key marker sits in the first WINDOW positions; decoys only in the last quarter


def _first_marker(n: int, seed: int) -> TensorDataset:
    """``(tokens [n, LENGTH], label [n])``: noise tokens, one marker in the first WINDOW positions and DECOYS markers
    of random kinds in the last quarter; the label is the kind of the first marker, so a model must tell a marker seen
    at least 160 positions back from the late ones (which tokens occur, unordered, does not say it)."""
    g = generator(seed)
    tokens = torch.randint(KINDS, VOCAB, (n, LENGTH), generator=g)
    label = torch.randint(0, KINDS, (n,), generator=g)
    rows = torch.arange(n)
    tokens[rows, torch.randint(0, WINDOW, (n,), generator=g)] = label
    for _ in range(DECOYS):
        tokens[rows, torch.randint(LENGTH - LENGTH // 4, LENGTH, (n,), generator=g)] = torch.randint(
            0, KINDS, (n,), generator=g
        )
    return TensorDataset(tokens, label)


class DiagonalSSM(nn.Module):
    """One S4D layer over ``channels`` independent channels, ``state`` (complex-conjugate pairs: state // 2 modes)."""

    ssm_parameters = ("log_dt", "log_A_real", "A_imag", "B")
    """What the S4 code trains at its own small learning rate without weight decay (C and D train with the rest)."""

    def __init__(self, channels: int, state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        modes = state // 2
        self.log_dt = nn.Parameter(torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_A_real = nn.Parameter(torch.full((channels, modes), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float).repeat(channels, 1))
        self.B = nn.Parameter(torch.stack([torch.ones(channels, modes), torch.zeros(channels, modes)], -1))
        self.C = nn.Parameter(torch.randn(channels, modes, 2) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(channels))

    def kernel(self, length: int) -> torch.Tensor:
        """``[channels, length]``: K[l] = 2 Re(sum_n C_n dB_n exp(dt A_n l)), ZOH dB = (exp(dt A) - 1) / A B."""
        dt = self.log_dt.exp().unsqueeze(1)
        A = torch.complex(-self.log_A_real.exp(), self.A_imag)
        dtA = A * dt
        B = torch.view_as_complex(self.B.contiguous())
        C = torch.view_as_complex(self.C.contiguous())
        weights = C * B * (dtA.exp() - 1) / A
        powers = torch.exp(dtA.unsqueeze(-1) * torch.arange(length, device=dt.device))
        k: torch.Tensor = 2 * torch.einsum("hn,hnl->hl", weights, powers).real
        return k

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``u [batch, channels, length]`` -> same shape: the causal convolution with the kernel, by FFT, plus D u."""
        length = u.shape[-1]
        k = self.kernel(length)
        y: torch.Tensor = torch.fft.irfft(
            torch.fft.rfft(u, n=2 * length) * torch.fft.rfft(k, n=2 * length), n=2 * length
        )
        return y[..., :length] + u * self.D.unsqueeze(1)


class S4Block(nn.Module):
    """Pre-LayerNorm residual block: norm, SSM, GELU, dropout, pointwise linear, dropout, add."""

    def __init__(self, width: int, state: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ssm = DiagonalSSM(width, state)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.ssm(self.norm(x).transpose(1, 2)).transpose(1, 2)
        out: torch.Tensor = x + self.dropout(self.out(self.dropout(F.gelu(z))))
        return out


class S4DClassifier(L.LightningModule):
    def __init__(
        self,
        width: int = 32,
        state: int = 32,
        depth: int = 2,
        dropout: float = 0.1,
        lr: float = 1e-2,
        ssm_lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Embedding(VOCAB, width)
        self.blocks = nn.ModuleList(S4Block(width, state, dropout) for _ in range(depth))
        self.head = nn.Linear(width, KINDS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.encoder(tokens)
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.head(x.mean(1))
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, label = batch
        loss = F.cross_entropy(self(tokens), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, label = batch
        logits = self(tokens)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        ssm: list[nn.Parameter] = []
        rest: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            (ssm if name.rsplit(".", 1)[-1] in DiagonalSSM.ssm_parameters else rest).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": rest, "lr": self.hparams["lr"], "weight_decay": self.hparams["weight_decay"]},
                {"params": ssm, "lr": self.hparams["ssm_lr"], "weight_decay": 0.0},
            ]
        )
        total = int(self.trainer.estimated_stepping_batches)
        warm = max(1, int(self.hparams["warmup"] * total))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        S4DClassifier(),
        loader(_first_marker(6144, seed), 32, seed=seed),
        loader(_first_marker(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 2},
    )


PROGRAMS = [
    Program(
        "s4d_sequence_h",
        "state-space sequence model",
        "an S4D diagonal state-space classifier (ZOH-discretised diagonal SSM kernels with S4D-Lin init applied by FFT "
        "convolution, pre-LayerNorm residual blocks, mean pooling) on a long-range first-marker task with late decoys; "
        "AdamW with log_dt, A and B in their own low-lr, no-decay group, a per-step linear warm-up then cosine decay",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
