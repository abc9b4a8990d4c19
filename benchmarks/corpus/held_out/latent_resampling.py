"""A sparse autoencoder on model activations with dead-latent resampling, as interpretability code trains them:
32-d activations that superpose 64 feature directions (firing with power-law frequencies, around a fixed mean),
512 ReLU latents reading ``x - b_dec`` (the pre-encoder bias, initialised to the data mean), squared reconstruction
error plus an L1 penalty on the code. Manual optimization: the gradient parallel to each decoder row is projected
out, Adam steps at 1e-3, the decoder rows are put back to unit norm. At steps 1500, 2500 and 3500 the latents that
have not fired for 300 steps are resampled: each gets an input drawn from a buffer of recent inputs with probability
proportional to its squared reconstruction error, its decoder row becomes that (centred) input normalised, its
encoder row the same direction at a fifth of the mean alive encoder norm, its encoder bias zero, and Adam's moments
of those rows are zeroed. The loss jumps for a few steps after each resampling, and latents keep dying between
resamplings (some are dead at the end): both healthy."""

from __future__ import annotations

from collections import deque
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

DIM, FEATURES, LATENTS = 32, 64, 512


def _activations(n: int, seed: int, task_seed: int = 61) -> TensorDataset:
    """``n`` activation vectors: a fixed offset plus features firing independently with power-law probabilities
    (about three at a time; the commonest on two inputs in five, the rarest on one in seventy), each along its own
    unit direction with a uniform magnitude, plus a little isotropic noise."""
    task = generator(task_seed)
    directions = F.normalize(torch.randn(FEATURES, DIM, generator=task), dim=1)
    offset = 0.5 * torch.randn(DIM, generator=task)
    rates = torch.arange(1, FEATURES + 1, dtype=torch.float).pow(-0.8)
    rates = (rates * 3 / rates.sum()).clamp(max=0.5)
    g = generator(seed)
    fires = torch.rand(n, FEATURES, generator=g) < rates
    magnitudes = 0.5 + torch.rand(n, FEATURES, generator=g)
    x = (fires * magnitudes) @ directions + offset + 0.03 * torch.randn(n, DIM, generator=g)
    return TensorDataset(x)


class ResampledSAE(L.LightningModule):
    """``f = relu((x - b_dec) @ W_enc + b_enc)``, ``x_hat = f @ W_dec + b_dec`` with unit-norm rows of ``W_dec``;
    loss = summed squared error + ``l1`` x the code's L1 norm, averaged over the batch."""

    steps_since_fired: torch.Tensor

    def __init__(
        self,
        data_mean: torch.Tensor,
        l1: float = 0.5,
        lr: float = 1e-3,
        resample_at: tuple[int, ...] = (1500, 2500, 3500),
        dead_window: int = 300,
        buffer_batches: int = 32,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.l1, self.lr = l1, lr
        self.resample_at, self.dead_window = resample_at, dead_window
        self.W_enc = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(DIM, LATENTS)))
        self.b_enc = nn.Parameter(torch.zeros(LATENTS))
        self.W_dec = nn.Parameter(F.normalize(torch.randn(LATENTS, DIM), dim=1))
        self.b_dec = nn.Parameter(data_mean.clone())
        self.register_buffer("steps_since_fired", torch.zeros(LATENTS, dtype=torch.long))
        self.recent: deque[torch.Tensor] = deque(maxlen=buffer_batches)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.encode(x)
        return codes @ self.W_dec + self.b_dec, codes

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        optimizer = self.optimizers()
        assert isinstance(optimizer, LightningOptimizer)
        reconstruction, codes = self(x)
        mse = (reconstruction - x).pow(2).sum(1).mean()
        sparsity = codes.sum(1).mean()
        loss: torch.Tensor = mse + self.l1 * sparsity
        optimizer.zero_grad()
        self.manual_backward(loss)
        self._drop_parallel_gradient()
        optimizer.step()
        self._unit_decoder_rows()

        with torch.no_grad():
            self.steps_since_fired += 1
            self.steps_since_fired[codes.amax(0) > 0] = 0
        self.recent.append(x.detach())
        if self.global_step in self.resample_at:
            resampled = self._resample(optimizer.optimizer)
            self.log("resampled_latents", float(resampled))
        self.log_dict(
            {
                "train_loss": loss,
                "train_mse": mse,
                "train_l0": (codes > 0).float().sum(1).mean(),
                "dead_latents": (self.steps_since_fired >= self.dead_window).float().mean(),
            }
        )
        return loss.detach()

    @torch.no_grad()
    def _drop_parallel_gradient(self) -> None:
        """Remove the part of each decoder row's gradient along the row: the row's norm is fixed anyway."""
        grad, rows = self.W_dec.grad, self.W_dec
        if grad is not None:
            grad -= (grad * rows).sum(1, keepdim=True) * rows

    @torch.no_grad()
    def _unit_decoder_rows(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def _resample(self, optimizer: torch.optim.Optimizer) -> int:
        dead = (self.steps_since_fired >= self.dead_window).nonzero().squeeze(1)
        if dead.numel() == 0 or not self.recent:
            return 0
        inputs = torch.cat(list(self.recent))
        reconstruction, _ = self(inputs)
        error = (reconstruction - inputs).pow(2).sum(1)
        # sampling proportional to the squared error, without replacement (Gumbel top-k)
        gumbel = -torch.log(-torch.log(torch.rand_like(error).clamp(1e-12, 1 - 1e-7)))
        count = min(dead.numel(), inputs.shape[0])
        dead = dead[:count]
        chosen = (error.pow(2).clamp_min(1e-30).log() + gumbel).topk(count).indices
        directions = F.normalize(inputs[chosen] - self.b_dec, dim=1)
        alive = self.steps_since_fired < self.dead_window
        encoder_norm = self.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
        self.W_dec[dead] = directions
        self.W_enc[:, dead] = directions.t() * 0.2 * encoder_norm
        self.b_enc[dead] = 0.0
        for param, index in ((self.W_enc, (slice(None), dead)), (self.W_dec, (dead,)), (self.b_enc, (dead,))):
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][index] = 0.0
        self.steps_since_fired[dead] = 0
        return count

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        (x,) = batch
        reconstruction, codes = self(x)
        residual = (reconstruction - x).pow(2).sum()
        total = (x - x.mean(0)).pow(2).sum()
        self.log_dict(
            {
                "val_loss": (reconstruction - x).pow(2).sum(1).mean(),
                "val_explained_variance": 1 - residual / total,
                "val_l0": (codes > 0).float().sum(1).mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = _activations(32768, seed)
    (x,) = train.tensors
    return Run(
        ResampledSAE(x[:4096].mean(0)),
        loader(train, 64, seed=seed),
        loader(_activations(2048, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "latent_resampling_h",
        "sparse autoencoder (dead-latent resampling)",
        "an overcomplete ReLU sparse autoencoder (32 -> 512 latents, pre-encoder bias, L1 penalty, unit-norm decoder "
        "rows with the parallel gradient removed) under manual optimization with Adam, whose dead latents are "
        "resampled toward badly reconstructed inputs at three fixed steps with their Adam moments zeroed",
        _build,
        faults=("lr_x1000", "no_zero_grad", "flipped_sign"),
    )
]
