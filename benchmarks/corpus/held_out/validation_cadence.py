"""How often real code validates: three times in a short run, every few steps of a long one, four times an epoch,
and on a slice of the training data. The validation loss these give is noisy around a floor the run reaches
early, which is where a rise detector must stay quiet."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Subset, TensorDataset

from benchmarks.corpus.data import generator, images, loader, markov_tokens, regression
from benchmarks.corpus.program import Program, Run


def _clusters(n: int, features: int = 24, classes: int = 8, seed: int = 0, task_seed: int = 17) -> TensorDataset:
    """Overlapping Gaussian classes (a tabular task whose best accuracy is well under 100%)."""
    centres = torch.randn(classes, features, generator=generator(task_seed)) * 0.6
    s = generator(seed)
    labels = torch.randint(0, classes, (n,), generator=s)
    return TensorDataset(centres[labels] + torch.randn(n, features, generator=s), labels)


class TabularClassifier(L.LightningModule):
    """Linear-BatchNorm-ReLU-Dropout blocks, AdamW with one-cycle stepped per batch, three epochs: the
    "train a few epochs, validate after each" of tabular and fine-tuning scripts."""

    def __init__(self, features: int = 24, classes: int = 8, hidden: int = 128, total_steps: int = 192) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = features
        for _ in range(2):
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.2)]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(hidden, classes))

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log_dict({f"{stage}_loss": loss, f"{stage}_acc": (logits.argmax(1) == y).float().mean()})
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=1e-2)
        cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=self.hparams.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cycle, "interval": "step"}}


def _build_tabular(seed: int) -> Run:
    train = loader(_clusters(4096, seed=seed), 64, seed=seed)
    return Run(
        TabularClassifier(total_steps=3 * len(train)),
        train,
        loader(_clusters(512, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 3},
    )


class TiedLSTMLanguageModel(L.LightningModule):
    """A two-layer LSTM whose decoder shares the embedding matrix, dropout between layers, AdamW with a linear
    warm-up per step; trained by steps and validated every ``val_check_interval`` steps on one fixed batch."""

    def __init__(self, vocab: int = 40, width: int = 64, warmup: int = 50) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, num_layers=2, dropout=0.2, batch_first=True)
        self.drop = nn.Dropout(0.2)

    def _loss(self, batch: Any) -> torch.Tensor:
        (tokens,) = batch
        hidden, _ = self.lstm(self.drop(self.embed(tokens[:, :-1])))
        logits = self.drop(hidden) @ self.embed.weight.t()
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=5e-3, weight_decay=0.01)
        warmup = self.hparams.warmup
        ramp = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": ramp, "interval": "step"}}


def _build_lm(seed: int) -> Run:
    vocab = 40
    return Run(
        TiedLSTMLanguageModel(vocab=vocab),
        loader(markov_tokens(2048, length=24, vocab=vocab, seed=seed), 32, seed=seed),
        loader(markov_tokens(256, length=24, vocab=vocab, seed=seed + 100), 64, shuffle=False),
        trainer={
            "max_steps": 480,
            "val_check_interval": 12,
            "check_val_every_n_epoch": None,
            "limit_val_batches": 1,
            "gradient_clip_val": 0.5,
        },
    )


class SmallConvNet(L.LightningModule):
    """Two conv-BatchNorm-ReLU-pool stages, global average pooling, a linear head; Nesterov SGD at a constant
    0.1 with weight decay; validated four times an epoch (``val_check_interval=0.25``) on 256 images."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        # The ImageNet recipe's decay every 30 epochs: a short run never reaches it.
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)]


def _build_cnn(seed: int) -> Run:
    return Run(
        SmallConvNet(),
        loader(images(3072, seed=seed), 64, seed=seed),
        loader(images(256, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5, "val_check_interval": 0.25},
    )


class ResidualRegressor(L.LightningModule):
    """Residual SiLU blocks with LayerNorm, Adam at a high rate decayed 10% an epoch; validated on a slice of its own
    training data (as quick scripts do), so its validation loss cannot rise from overfitting."""

    def __init__(self, features: int = 16, width: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = nn.Linear(features, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(2)
        )
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_mse", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-2)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)]


def _build_regressor(seed: int) -> Run:
    data = regression(4096, noise=0.3, seed=seed)
    return Run(
        ResidualRegressor(),
        loader(data, 128, seed=seed),
        loader(Subset(data, range(512)), 512, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "tabular_three_evals_h",
        "tabular classification",
        "a BatchNorm-dropout MLP on overlapping Gaussian classes, AdamW with one-cycle per step, three epochs "
        "validated once each",
        _build_tabular,
        faults=("lr_x1000", "frozen", "nan_batch"),
    ),
    Program(
        "tied_lstm_step_validated_h",
        "language model",
        "a two-layer LSTM with tied embedding and decoder, AdamW with linear warm-up, 480 steps validated every "
        "12 steps on one fixed batch (40 evaluations, most of them on the converged plateau)",
        _build_lm,
        faults=("nan_batch", "lr_div_1e6", "no_zero_grad"),
    ),
    Program(
        "cnn_quarter_epoch_val_h",
        "image classification",
        "a BatchNorm CNN, Nesterov SGD at 0.1 with weight decay, validated four times an epoch on 256 images",
        _build_cnn,
        faults=("lr_x1000", "flipped_sign", "frozen"),
    ),
    Program(
        "residual_mlp_train_slice_val_h",
        "regression",
        "a residual SiLU/LayerNorm MLP, Adam at 1e-2 decayed 10% an epoch, four epochs validated on a slice "
        "of the training data",
        _build_regressor,
        faults=("lr_x1000", "frozen", "flipped_sign"),
    ),
]
