"""Deep Q-learning on a cart-pole implemented in torch, as Lightning's DQN example trains it: the training step plays
the environment with an epsilon-greedy policy and stores what happened in a replay buffer, batches are drawn from the
buffer, the Huber loss of the temporal-difference error is taken against a frozen target network that is copied from
the online one every few hundred steps. Adam, gradient clipping.

The TD loss of a learning agent is not a falling curve: as the agent survives longer its Q-values grow towards
1 / (1 - gamma), so the targets and their errors grow, and each copy into the target network moves every target at
once. The episode return is the measure of health."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from benchmarks.corpus.data import generator
from benchmarks.corpus.held_out.synthetic import CartPole
from benchmarks.corpus.program import Program, Run

Batch = tuple[torch.Tensor, ...]


class ReplayBuffer:
    """A ring of the last ``capacity`` transitions (observation, action, reward, next observation, done)."""

    def __init__(self, capacity: int) -> None:
        self.obs = torch.zeros(capacity, 4)
        self.next_obs = torch.zeros(capacity, 4)
        self.action = torch.zeros(capacity, dtype=torch.long)
        self.reward = torch.zeros(capacity)
        self.done = torch.zeros(capacity)
        self.capacity, self.size, self.cursor = capacity, 0, 0

    def push(self, *transition: torch.Tensor) -> None:
        """Store a batch of transitions: observations, actions, rewards, next observations, dones."""
        slots = (self.cursor + torch.arange(len(transition[0]))) % self.capacity
        stores = (self.obs, self.action, self.reward, self.next_obs, self.done)
        for store, values in zip(stores, transition, strict=True):
            store[slots] = values
        self.cursor = int(slots[-1] + 1) % self.capacity
        self.size = min(self.size + len(slots), self.capacity)

    def sample(self, n: int, g: torch.Generator) -> Batch:
        idx = torch.randint(0, self.size, (n,), generator=g)
        return self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx], self.done[idx]


class DQN(L.LightningModule):
    def __init__(
        self,
        seed: int,
        envs: int = 4,
        capacity: int = 20_000,
        warm_up: int = 1_000,
        sync_every: int = 250,
        explore_steps: int = 1_500,
        lr: float = 1e-3,
        gamma: float = 0.99,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.q = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.env = CartPole(envs, seed=seed)
        self.buffer = ReplayBuffer(capacity)
        self.g = generator(seed)
        self.played = 0
        for _ in range(warm_up // envs):
            self.play(epsilon=1.0)

    def epsilon(self) -> float:
        return max(0.05, 1.0 - 0.95 * self.played / self.hparams.explore_steps)

    @torch.no_grad()
    def play(self, epsilon: float | None = None) -> None:
        """One step of every environment, epsilon-greedy, into the buffer."""
        eps = self.epsilon() if epsilon is None else epsilon
        obs = self.env.observe()
        greedy = self.q(obs).argmax(1)
        explore = torch.rand(len(obs), generator=self.g) < eps
        action = torch.where(explore, torch.randint(0, 2, (len(obs),), generator=self.g), greedy)
        reward, done = self.env.step(action)
        # A finished env was reset by step(): its next observation is bootstrapped from nowhere (done masks it).
        self.buffer.push(obs, action, reward, self.env.observe(), done.float())
        if epsilon is None:
            self.played += 1

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        obs, action, reward, nxt, done = batch
        q = self.q(obs).gather(1, action[:, None]).squeeze(1)
        with torch.no_grad():
            target = reward + self.hparams.gamma * (1.0 - done) * self.target(nxt).max(1).values
        loss = F.smooth_l1_loss(q, target)
        if self.global_step % self.hparams.sync_every == 0:
            self.target.load_state_dict(self.q.state_dict())
        done_returns = self.env.finished[-20:]
        self.log_dict({"td_loss": loss, "q_mean": q.mean().detach()})
        self.log("epsilon", self.epsilon(), on_step=True, on_epoch=False)
        self.log("episode_return", sum(done_returns) / max(1, len(done_returns)), on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.q.parameters(), lr=self.hparams.lr)


class PlayAndSample(IterableDataset[Batch]):
    """Per epoch, ``steps`` batches: before each, the agent plays one step of its environments."""

    def __init__(self, agent: DQN, steps: int, batch_size: int) -> None:
        self.agent, self.steps, self.batch_size = agent, steps, batch_size

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            self.agent.play()
            yield self.agent.buffer.sample(self.batch_size, self.agent.g)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    agent = DQN(seed)
    stream = PlayAndSample(agent, steps=500, batch_size=64)
    return Run(agent, DataLoader(stream, batch_size=None), trainer={"max_epochs": 6, "gradient_clip_val": 10.0})


PROGRAMS = [
    Program(
        "dqn_cartpole_h",
        "RL",
        "DQN: epsilon-greedy play of parallel envs into a replay buffer inside the data stream, Huber TD loss against "
        "a target network copied every 250 steps, Adam, gradient clipping; the TD loss grows as the Q-values do",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
