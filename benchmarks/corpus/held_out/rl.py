"""On-policy reinforcement learning on a cart-pole implemented in torch: PPO (two networks, two optimizers,
manual optimization) and A2C (one shared trunk, one optimizer), both fed by a rollout stream that steps the
environment with the current policy, as Lightning RL examples do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.distributions import Categorical
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from benchmarks.corpus.data import generator
from benchmarks.corpus.held_out.synthetic import CartPole
from benchmarks.corpus.program import Program, Run

Batch = tuple[torch.Tensor, ...]


def _mlp(inputs: int, outputs: int, hidden: int = 32) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, outputs)
    )


class RolloutStream(IterableDataset[Batch]):
    """Per epoch: ``rollouts`` fresh rollouts from ``collect``, each cut into shuffled minibatches, ``passes``
    times over (1 pass and 1 minibatch for A2C)."""

    def __init__(self, collect: Callable[[], Batch], rollouts: int, passes: int, minibatches: int, seed: int) -> None:
        self.collect, self.rollouts, self.passes, self.minibatches = collect, rollouts, passes, minibatches
        self.g = generator(seed)

    def __len__(self) -> int:
        return self.rollouts * self.passes * self.minibatches

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.rollouts):
            data = self.collect()
            n = len(data[0])
            for _ in range(self.passes):
                order = torch.randperm(n, generator=self.g)
                for chunk in order.chunk(self.minibatches):
                    yield tuple(t[chunk] for t in data)


def _gae(
    rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """Generalised advantage estimates over a ``[T, N]`` rollout."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last)
    for t in reversed(range(len(rewards))):
        following = last if t == len(rewards) - 1 else values[t + 1]
        alive = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * following * alive - values[t]
        running = delta + gamma * lam * alive * running
        advantages[t] = running
    return advantages


class PPO(L.LightningModule):
    """PPO-clip: separate actor and critic MLPs with their own Adam, manual optimization, GAE, clipped
    surrogate with an entropy bonus, value MSE, several passes over each rollout."""

    def __init__(self, seed: int, envs: int = 8, horizon: int = 64, clip: float = 0.2, entropy: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.actor = _mlp(4, 2)
        self.critic = _mlp(4, 1)
        self.env = CartPole(envs, seed=seed)
        self.gamma, self.lam = 0.99, 0.95

    @torch.no_grad()
    def collect(self) -> Batch:
        """One rollout of ``horizon`` steps of every env with the current policy, with GAE returns."""
        steps: list[tuple[torch.Tensor, ...]] = []
        for _ in range(self.hparams.horizon):
            o = self.env.observe()
            dist = Categorical(logits=self.actor(o))
            a = dist.sample()
            r, d = self.env.step(a)
            steps.append((o, a, dist.log_prob(a), self.critic(o).squeeze(-1), r, d))
        obs, actions, logps, values, rewards, dones = (torch.stack(t) for t in zip(*steps))
        last = self.critic(self.env.observe()).squeeze(-1)
        adv = _gae(rewards, values, dones, last, self.gamma, self.lam)
        return tuple(t.flatten(0, 1) for t in (obs, actions, logps, adv, adv + values))

    def episode_return(self) -> float:
        done = self.env.finished[-20:]
        return sum(done) / len(done) if done else 0.0

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        obs, actions, old_logp, adv, returns = batch
        opt_actor, opt_critic = self.optimizers()
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        dist = Categorical(logits=self.actor(obs))
        ratio = torch.exp(dist.log_prob(actions) - old_logp)
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - self.hparams.clip, 1 + self.hparams.clip) * adv)
        entropy = dist.entropy().mean()
        actor_loss = -surrogate.mean() - self.hparams.entropy * entropy
        opt_actor.zero_grad()
        self.manual_backward(actor_loss)
        opt_actor.step()
        critic_loss = 0.5 * F.mse_loss(self.critic(obs).squeeze(-1), returns)
        opt_critic.zero_grad()
        self.manual_backward(critic_loss)
        opt_critic.step()
        self.log_dict({"actor_loss": actor_loss, "critic_loss": critic_loss, "entropy": entropy})
        self.log("episode_return", self.episode_return(), on_step=False, on_epoch=True)
        return {"loss": (actor_loss + critic_loss).detach()}

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.actor.parameters(), lr=3e-3), torch.optim.Adam(self.critic.parameters(), lr=3e-3)


def _build_ppo(seed: int) -> Run:
    agent = PPO(seed)
    stream = RolloutStream(agent.collect, rollouts=2, passes=4, minibatches=4, seed=seed)
    return Run(agent, DataLoader(stream, batch_size=None), trainer={"max_epochs": 6})


class A2C(L.LightningModule):
    """Advantage actor-critic: a shared trunk with policy and value heads, n-step returns from short
    rollouts of parallel envs, loss = policy + 0.5 value - 0.01 entropy, RMSprop, gradient clipping."""

    def __init__(self, seed: int, envs: int = 16, horizon: int = 8, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.trunk = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.policy = nn.Linear(64, 2)
        self.value = nn.Linear(64, 1)
        self.env = CartPole(envs, seed=seed)
        self.gamma = 0.99

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.policy(h), self.value(h).squeeze(-1)

    @torch.no_grad()
    def collect(self) -> Batch:
        """``horizon`` steps of every env, with n-step discounted returns bootstrapped from the value head."""
        steps: list[tuple[torch.Tensor, ...]] = []
        for _ in range(self.hparams.horizon):
            o = self.env.observe()
            a = Categorical(logits=self(o)[0]).sample()
            r, d = self.env.step(a)
            steps.append((o, a, r, d))
        obs, actions, rewards, dones = (torch.stack(t) for t in zip(*steps))
        ret = self(self.env.observe())[1]
        returns = torch.zeros_like(rewards)
        for t in reversed(range(len(rewards))):
            ret = rewards[t] + self.gamma * ret * (1.0 - dones[t].float())
            returns[t] = ret
        return obs.flatten(0, 1), actions.flatten(), returns.flatten()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        obs, actions, returns = batch
        logits, value = self(obs)
        dist = Categorical(logits=logits)
        advantage = returns - value.detach()
        policy_loss = -(dist.log_prob(actions) * advantage).mean()
        value_loss = F.mse_loss(value, returns)
        entropy = dist.entropy().mean()
        loss = policy_loss + 0.5 * value_loss - 0.01 * entropy
        done = self.env.finished[-20:]
        self.log_dict({"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy})
        self.log("episode_return", sum(done) / len(done) if done else 0.0, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr, alpha=0.99, eps=1e-5)


def _build_a2c(seed: int) -> Run:
    agent = A2C(seed)
    stream = RolloutStream(agent.collect, rollouts=40, passes=1, minibatches=1, seed=seed)
    return Run(agent, DataLoader(stream, batch_size=None), trainer={"max_epochs": 4, "gradient_clip_val": 0.5})


PROGRAMS = [
    Program(
        "ppo_cartpole_h",
        "RL",
        "PPO-clip with separate actor and critic networks and two Adam optimizers under manual optimization, "
        "GAE, entropy bonus, four passes over each rollout of parallel envs",
        _build_ppo,
        faults=("lr_x1000", "flipped_sign", "lr_div_1e6"),
    ),
    Program(
        "a2c_cartpole_h",
        "RL",
        "A2C with a shared trunk and policy/value heads, one RMSprop, 8-step returns of 16 envs, "
        "loss = policy + 0.5 value - 0.01 entropy, gradient clipping",
        _build_a2c,
        faults=("lr_x1000", "flipped_sign", "lr_div_1e6"),
    ),
]
