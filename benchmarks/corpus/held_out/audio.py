"""Audio classification: a 1-D CNN over raw waveforms (strided conv front end, BatchNorm, global pooling),
SGD with momentum and StepLR, as in keyword-spotting tutorials."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import audio_clips
from benchmarks.corpus.program import Program, Run


class WaveCNN(L.LightningModule):
    """Conv1d(stride 4)-BN-ReLU-MaxPool twice, Conv1d-BN-ReLU, global average pool, linear classifier; SGD
    (momentum 0.9, weight decay) with StepLR halving every two epochs; torchmetrics accuracy."""

    def __init__(self, classes: int = 8, width: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 16, stride=4, padding=6),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(width, 2 * width, 5, padding=2),
            nn.BatchNorm1d(2 * width),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm1d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.classifier = nn.Linear(2 * width, classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(wave).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        wave, label = batch
        loss = F.cross_entropy(self(wave), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        wave, label = batch
        logits = self(wave)
        self.val_acc(logits, label)
        self.log_dict({"val_loss": F.cross_entropy(logits, label), "val_acc": self.val_acc})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)]


def _build(seed: int) -> Run:
    return Run(
        WaveCNN(),
        loader(audio_clips(1280, classes=8, length=128, noise=1.0, seed=seed), 32, seed=seed),
        loader(audio_clips(384, classes=8, length=128, noise=1.0, seed=seed + 100), 384, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "cnn1d_audio_h",
        "audio classification",
        "a 1-D CNN on raw waveforms (strided conv front end, BatchNorm, global average pooling), SGD with "
        "momentum and weight decay, StepLR halving every two epochs, torchmetrics accuracy",
        _build,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
    )
]
