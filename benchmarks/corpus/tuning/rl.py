"""Reinforcement learning: the DQN of Lightning's RL tutorial (agent, replay buffer, iterable dataset,
target network) on a small gridworld instead of a gym environment."""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from benchmarks.corpus.program import Program, Run


class GridWorld:
    """A ``size`` x ``size`` grid: start on a random cell, +1 for reaching the bottom-right corner, a small cost
    per move, the episode cut off after ``limit`` moves. Observations are the scaled (row, column)."""

    moves = ((-1, 0), (1, 0), (0, -1), (0, 1))

    def __init__(self, rng: np.random.Generator, size: int = 6, limit: int = 30, step_cost: float = 0.02) -> None:
        self.rng, self.size, self.limit, self.step_cost = rng, size, limit, step_cost
        self.pos = (0, 0)
        self.t = 0

    def observe(self) -> np.ndarray:
        state = np.zeros(self.size * self.size, dtype=np.float32)
        state[self.pos[0] * self.size + self.pos[1]] = 1.0
        return state

    def reset(self, start: tuple[int, int] | None = None) -> np.ndarray:
        while start is None or start == (self.size - 1, self.size - 1):
            start = (int(self.rng.integers(self.size)), int(self.rng.integers(self.size)))
        self.pos, self.t = start, 0
        return self.observe()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        dr, dc = self.moves[action]
        r = min(max(self.pos[0] + dr, 0), self.size - 1)
        c = min(max(self.pos[1] + dc, 0), self.size - 1)
        self.pos, self.t = (r, c), self.t + 1
        goal = self.pos == (self.size - 1, self.size - 1)
        reward = 1.0 if goal else -self.step_cost
        return self.observe(), reward, goal or self.t >= self.limit


class Experience(NamedTuple):
    state: np.ndarray
    action: int
    reward: float
    done: bool
    next_state: np.ndarray


class ReplayBuffer:
    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.buffer: deque[Experience] = deque(maxlen=capacity)
        self.rng = rng

    def __len__(self) -> int:
        return len(self.buffer)

    def append(self, experience: Experience) -> None:
        self.buffer.append(experience)

    def sample(self, n: int) -> tuple[np.ndarray, ...]:
        picked = [self.buffer[i] for i in self.rng.choice(len(self.buffer), n, replace=False)]
        states, actions, rewards, dones, next_states = zip(*picked)
        return (
            np.stack(states),
            np.array(actions, dtype=np.int64),
            np.array(rewards, dtype=np.float32),
            np.array(dones, dtype=bool),
            np.stack(next_states),
        )


class RLDataset(IterableDataset[tuple[np.ndarray, ...]]):
    """Yields ``sample_size`` experiences from the buffer per epoch; the buffer keeps growing meanwhile."""

    def __init__(self, buffer: ReplayBuffer, sample_size: int) -> None:
        self.buffer, self.sample_size = buffer, sample_size

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        states, actions, rewards, dones, next_states = self.buffer.sample(self.sample_size)
        for i in range(len(dones)):
            yield states[i], actions[i], rewards[i], dones[i], next_states[i]


class Agent:
    def __init__(self, env: GridWorld, buffer: ReplayBuffer, rng: np.random.Generator) -> None:
        self.env, self.buffer, self.rng = env, buffer, rng
        self.state = env.reset()

    def act(self, net: nn.Module, epsilon: float) -> int:
        if self.rng.random() < epsilon:
            return int(self.rng.integers(4))
        with torch.no_grad():
            return int(net(torch.from_numpy(self.state)[None]).argmax(1))

    def play_step(self, net: nn.Module, epsilon: float) -> tuple[float, bool]:
        action = self.act(net, epsilon)
        next_state, reward, done = self.env.step(action)
        self.buffer.append(Experience(self.state, action, reward, done, next_state))
        self.state = self.env.reset() if done else next_state
        return reward, done


class DQN(L.LightningModule):
    """One environment step and one TD update per training step, MSE TD loss against a target network synced
    every ``sync_rate`` steps, linear epsilon decay, Adam; logs the return of each finished episode and a greedy
    evaluation return every epoch."""

    def __init__(
        self,
        seed: int,
        gamma: float = 0.9,
        lr: float = 1e-3,
        sync_rate: int = 10,
        replay_size: int = 2000,
        warm_start: int = 1000,
        eps_start: float = 1.0,
        eps_end: float = 0.05,
        eps_frames: int = 200,
        sample_size: int = 1000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(36, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
        self.target_net = copy.deepcopy(self.net)
        rng = np.random.default_rng(seed)
        self.buffer = ReplayBuffer(replay_size, rng)
        self.agent = Agent(GridWorld(rng), self.buffer, rng)
        self.episode_return = 0.0
        for _ in range(warm_start):
            self.agent.play_step(self.net, epsilon=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def td_loss(self, batch: Any) -> torch.Tensor:
        states, actions, rewards, dones, next_states = batch
        q = self.net(states).gather(1, actions[:, None]).squeeze(1)
        with torch.no_grad():
            next_q = self.target_net(next_states).max(1).values
            next_q[dones] = 0.0
            target = rewards + self.hparams.gamma * next_q
        return F.mse_loss(q, target)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        epsilon = max(hp.eps_end, hp.eps_start - self.global_step / hp.eps_frames)
        reward, done = self.agent.play_step(self.net, epsilon)
        self.episode_return += reward
        loss = self.td_loss(batch)
        if done:
            self.log("episode_return", self.episode_return)
            self.episode_return = 0.0
        if self.global_step % hp.sync_rate == 0:
            self.target_net.load_state_dict(self.net.state_dict())
        self.log_dict({"td_loss": loss, "epsilon": epsilon})
        return loss

    def on_train_epoch_end(self) -> None:
        """Greedy return averaged over every start cell (the environments stepped side by side)."""
        size = self.agent.env.size
        envs = [GridWorld(self.buffer.rng) for _ in range(size * size - 1)]
        states = [env.reset((i // size, i % size)) for i, env in enumerate(envs)]
        returns, running = np.zeros(len(envs)), [True] * len(envs)
        with torch.no_grad():
            while any(running):
                actions = self.net(torch.from_numpy(np.stack(states))).argmax(1).tolist()
                for i, env in enumerate(envs):
                    if running[i]:
                        states[i], reward, done = env.step(actions[i])
                        returns[i] += reward
                        running[i] = not done
        self.log("eval_return", float(returns.mean()))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)


def _dqn(seed: int) -> Run:
    module = DQN(seed)
    return Run(
        module,
        DataLoader(RLDataset(module.buffer, module.hparams.sample_size), batch_size=16),
        trainer={"max_steps": 256},
    )


PROGRAMS = [
    Program(
        "dqn_gridworld",
        "reinforcement learning",
        "Lightning-tutorial DQN: replay buffer as IterableDataset, epsilon-greedy agent stepping in training_step, "
        "target network synced every N steps, MSE TD loss, Adam",
        _dqn,
        faults=("no_zero_grad", "nan_batch", "flipped_sign"),
    )
]
