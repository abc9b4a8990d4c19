"""Hard attention trained by REINFORCE (recurrent-attention style): a policy picks which 4x4 patch of a 16x16 image
to look at, three glimpses in a row, a GRU cell keeps what it saw, and a classifier answers from the last state.
The choice of patch is not differentiable: its log-probability is pushed by the reward (1 for a right answer) less a
learned baseline. The returned loss adds a cross-entropy, a policy term that is negative whenever the reward beats
the baseline, and the baseline's squared error: a total that is noisy and can dip below zero."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

PATCH, GRID, GLIMPSES = 4, 4, 3  # 16 candidate patches of 4x4 on a 16x16 image


class GlimpseClassifier(L.LightningModule):
    """Glimpse encoder (patch pixels + where) -> GRU cell -> location policy and class head; Adam 1e-3."""

    def __init__(self, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.glimpse = nn.Sequential(nn.Linear(PATCH * PATCH + GRID * GRID, hidden), nn.ReLU())
        self.core = nn.GRUCell(hidden, hidden)
        self.policy = nn.Linear(hidden, GRID * GRID)
        self.classifier = nn.Linear(hidden, classes)
        self.baseline = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (class logits, summed log-probability of the chosen locations, baseline per glimpse [B, GLIMPSES])."""
        patches = F.unfold(x, PATCH, stride=PATCH).transpose(1, 2)  # [B, 16, 16]
        state = x.new_zeros(x.shape[0], self.core.hidden_size)
        log_prob = x.new_zeros(x.shape[0])
        baselines = []
        for _ in range(GLIMPSES):
            policy = torch.distributions.Categorical(logits=self.policy(state))
            where = policy.sample()
            log_prob = log_prob + policy.log_prob(where)
            seen = patches[torch.arange(x.shape[0]), where]
            state = self.core(self.glimpse(torch.cat([seen, F.one_hot(where, GRID * GRID).float()], 1)), state)
            baselines.append(self.baseline(state.detach()).squeeze(1))
        return self.classifier(state), log_prob, torch.stack(baselines, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits, log_prob, baseline = self(x)
        reward = (logits.argmax(1) == y).float()
        advantage = (reward.unsqueeze(1) - baseline).detach().mean(1)
        policy_loss = -(advantage * log_prob).mean()
        loss = F.cross_entropy(logits, y) + policy_loss + F.mse_loss(baseline, reward.unsqueeze(1).expand_as(baseline))
        self.log_dict({"train_loss": loss, "train_reward": reward.mean()})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits, _, _ = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build(seed: int) -> Run:
    return Run(
        GlimpseClassifier(),
        loader(images(2048, noise=0.5, seed=seed), 64, seed=seed),
        loader(images(512, noise=0.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "hard_attention_reinforce_h",
        "hard attention (REINFORCE)",
        "recurrent hard attention: a policy samples which patch to glimpse (three glimpses, GRU cell), trained by "
        "REINFORCE with a learned baseline next to the classifier's cross-entropy; the total can dip below zero",
        _build,
        faults=("lr_x1000", "flipped_sign", "no_zero_grad"),
    )
]
