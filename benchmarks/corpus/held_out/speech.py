"""Speech-recognition style sequence labelling with CTC: token sequences rendered as noisy feature frames of
random durations, a convolutional front end and a bidirectional GRU, ``nn.CTCLoss(zero_infinity=True)``, Adam
and gradient clipping. CTC models first learn to emit only blanks (the loss drops fast, then sits on a shelf)
before alignments form and the loss falls again."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

TOKENS, FEATURES, FRAMES, MAX_LABELS = 8, 12, 36, 6  # token ids 1..TOKENS; 0 is the CTC blank


def _utterances(n: int, seed: int, task_seed: int = 31) -> TensorDataset:
    """``(frames [n, FRAMES, FEATURES], labels [n, MAX_LABELS] zero-padded, frame count, label count)``."""
    templates = torch.randn(TOKENS + 1, FEATURES, generator=generator(task_seed)) * 1.5
    s = generator(seed)
    frames = torch.zeros(n, FRAMES, FEATURES)
    labels = torch.zeros(n, MAX_LABELS, dtype=torch.long)
    frame_counts = torch.zeros(n, dtype=torch.long)
    label_counts = torch.randint(3, MAX_LABELS + 1, (n,), generator=s)
    for i in range(n):
        count = int(label_counts[i])
        tokens = torch.randint(1, TOKENS + 1, (count,), generator=s)
        labels[i, :count] = tokens
        t = int(torch.randint(0, 4, (1,), generator=s))  # leading silence
        for token in tokens.tolist():
            duration = int(torch.randint(2, 5, (1,), generator=s))
            frames[i, t : t + duration] = templates[token]
            t += duration + int(torch.randint(0, 2, (1,), generator=s))  # an optional silent frame between
        frame_counts[i] = min(FRAMES, t + 2)
    frames += torch.randn(frames.shape, generator=s) * 0.8
    return TensorDataset(frames, labels, frame_counts, label_counts)


class CTCRecogniser(L.LightningModule):
    def __init__(self, hidden: int = 48, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.front = nn.Sequential(nn.Conv1d(FEATURES, hidden, 3, padding=1), nn.ReLU())
        self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.output = nn.Linear(2 * hidden, TOKENS + 1)
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.front(frames.transpose(1, 2)).transpose(1, 2)
        return self.output(self.rnn(features)[0]).log_softmax(-1)  # [batch, time, classes]

    def _loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        frames, labels, frame_counts, label_counts = batch
        log_probs = self(frames)
        return self.ctc(log_probs.transpose(0, 1), labels, frame_counts, label_counts), log_probs

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, log_probs = self._loss(batch)
        _, labels, frame_counts, label_counts = batch
        best = log_probs.argmax(-1)
        exact = []
        for path, count, label, label_count in zip(best, frame_counts, labels, label_counts):
            path = torch.unique_consecutive(path[: int(count)])
            decoded = path[path != 0]
            exact.append(float(torch.equal(decoded, label[: int(label_count)])))
        self.log_dict({"val_loss": loss, "val_exact": sum(exact) / len(exact)})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _build(seed: int) -> Run:
    return Run(
        CTCRecogniser(),
        loader(_utterances(1024, seed), 32, seed=seed),
        loader(_utterances(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6, "gradient_clip_val": 5.0},
    )


PROGRAMS = [
    Program(
        "ctc_bigru_h",
        "speech recognition",
        "CTC on token sequences rendered as noisy frames of random durations: conv front end, bidirectional GRU, "
        "nn.CTCLoss(zero_infinity=True), Adam, gradient clipping 5, exact-match greedy decoding on validation",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
