"""Losses measured on what a random mask hides: a masked autoencoder that reconstructs 75% of an image's patches
from the rest, a new mask every step, and a heteroscedastic regressor whose Gaussian negative log-likelihood
weighs each error by a variance it predicts itself."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader, regression
from benchmarks.corpus.program import Program, Run


class MaskedAutoencoder(L.LightningModule):
    """MAE in miniature: 4x4 patches of a 16x16 image, a random 75% masked each step (per image), a transformer
    encoder over the visible patches with their positions, a linear decoder that predicts every patch from the
    encoded visible ones plus a mask token at each hidden position; the loss is the squared error on the hidden
    patches only. AdamW with a warm-up, then cosine."""

    def __init__(self, patch: int = 4, size: int = 16, width: int = 64, mask_ratio: float = 0.75) -> None:
        super().__init__()
        self.save_hyperparameters()
        count = (size // patch) ** 2
        self.embed = nn.Linear(patch * patch, width)
        self.position = nn.Parameter(torch.randn(1, count, width) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.mixer = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.decoder = nn.Linear(width, patch * patch)

    def _loss(self, batch: Any) -> torch.Tensor:
        p = self.hparams.patch
        patches = F.unfold(batch[0], p, stride=p).transpose(1, 2)  # [n, count, p*p]
        n, count, _ = patches.shape
        keep = int(count * (1 - self.hparams.mask_ratio))
        order = torch.rand(n, count, device=patches.device).argsort(1)
        visible, hidden = order[:, :keep], order[:, keep:]
        tokens = self.embed(patches) + self.position
        encoded = self.encoder(torch.gather(tokens, 1, visible[..., None].expand(-1, -1, tokens.size(-1))))
        full = (self.mask_token + self.position).expand(n, -1, -1).clone()
        full.scatter_(1, visible[..., None].expand(-1, -1, full.size(-1)), encoded)
        predicted = self.decoder(self.mixer(full))
        index = hidden[..., None].expand(-1, -1, patches.size(-1))
        return F.mse_loss(torch.gather(predicted, 1, index), torch.gather(patches, 1, index))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_masked_mse", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
        total = self.trainer.estimated_stepping_batches
        warm = torch.optim.lr_scheduler.LinearLR(optimizer, 0.01, 1.0, total_iters=40)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - 40))
        schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[40])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build_mae(seed: int) -> Run:
    return Run(
        MaskedAutoencoder(),
        loader(images(2048, noise=0.3, seed=seed), 64, seed=seed),
        loader(images(256, noise=0.3, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


class HeteroscedasticRegressor(L.LightningModule):
    """An MLP with a mean head and a variance head (softplus), ``GaussianNLLLoss``: each squared error divided by the
    variance the model predicts for it, plus its log. The loss crosses zero and settles below it; the errors the
    model is sure of weigh the most. Adam; the target's noise grows with the first feature."""

    def __init__(self, features: int = 16, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.mean = nn.Linear(width, 1)
        self.variance = nn.Sequential(nn.Linear(width, 1), nn.Softplus())
        self.nll = nn.GaussianNLLLoss(eps=1e-4)

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        h = self.body(x)
        return self.nll(self.mean(h), y, self.variance(h))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_nll", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def _noisier_with_x0(n: int, seed: int) -> torch.utils.data.TensorDataset:
    x, y = regression(n, noise=0.0, seed=seed).tensors
    scale = 0.05 + 0.5 * torch.sigmoid(2 * x[:, :1])
    noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed + 7))
    return torch.utils.data.TensorDataset(x, y + scale * noise)


def _build_heteroscedastic(seed: int) -> Run:
    return Run(
        HeteroscedasticRegressor(),
        loader(_noisier_with_x0(2048, seed), 64, seed=seed),
        loader(_noisier_with_x0(512, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 10},
    )


PROGRAMS = [
    Program(
        "masked_autoencoder_h",
        "self-supervised vision",
        "a miniature MAE: 75% of the 4x4 patches masked at random every step, a transformer encoder over the "
        "visible ones, squared error on the hidden patches only; AdamW, warm-up then cosine",
        _build_mae,
        faults=("lr_x1000", "frozen", "nan_batch"),
    ),
    Program(
        "gaussian_nll_heteroscedastic_h",
        "probabilistic regression",
        "an MLP predicting a mean and a variance, GaussianNLLLoss (crosses zero and settles below it) on targets "
        "whose noise grows with one feature, Adam",
        _build_heteroscedastic,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6"),
    ),
]
