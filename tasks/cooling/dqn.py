"""The DQN agent: the paper's small network, experience replay, epsilon-greedy, early stopping.

Acting runs in the compiled environment (`fast_eval.Simulation` with pre-drawn exploration
numbers), learning in torch: every `train_every_steps` minutes the actor hands its transitions
to the replay memory and one Adam step is taken on a batch sampled from it, then the actor gets
the new weights. The reference takes one batch-512 step per minute (216,000 per 5-month
episode, ~6 minutes of CPU per episode here); one step per 64 minutes keeps each transition
sampled ~8 times while it is in the 3,000-transition memory (512 / 64) and an episode at seconds.
While the memory fills, the interval shrinks in proportion (down to one step per minute), so the
short first episodes, which end within minutes, are learned from as the reference does.

Early stopping: `early_stopping_on="episode"` is the reference's rule (the training episode's
total reward); `"validation"` scores the greedy agent after each episode on a fixed set of
weeks (one per season) in evaluation mode and keeps the best weights, which is less noisy
when episodes start in random months. Torch runs single-threaded: at batch 512 on this network
intra-op threads cost more than they give (and the CPU is shared).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from tasks.cooling import room, seed
from tasks.cooling.fast_eval import ROOM_OBS, SEED_OBS, Controller, Simulation, Weights, run
from tasks.meters.runtime import torch_threads
from thresholds.cooling.env import MINUTES_PER_DAY, MINUTES_PER_MONTH, DQNConfig, RoomConfig, SeedConfig

EnvName = Literal["seed", "room"]
EnvConfig = SeedConfig | RoomConfig


class QNetwork(nn.Module):
    """Observation -> one Q-value per action; two hidden ReLU layers (64 and 32 in the paper)."""

    def __init__(self, obs_dim: int, hidden_units: tuple[int, int], n_actions: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden_units[0]),
            nn.ReLU(),
            nn.Linear(hidden_units[0], hidden_units[1]),
            nn.ReLU(),
            nn.Linear(hidden_units[1], n_actions),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def weights(self) -> Weights:
        layers = [m for m in self.net if isinstance(m, nn.Linear)]
        return Weights.from_linear([(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in layers])

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def env_name(cfg: EnvConfig) -> EnvName:
    return "seed" if isinstance(cfg, SeedConfig) else "room"


def dims(cfg: EnvConfig) -> tuple[int, int]:
    """(observation size, number of actions)."""
    if isinstance(cfg, SeedConfig):
        return SEED_OBS, len(cfg.action_moves_c)
    return ROOM_OBS, len(cfg.cooling_levels_kw)


def make_trajectory(
    cfg: EnvConfig, minutes: int, rng: np.random.Generator | int, start_month: int | None = None
) -> seed.SeedTrajectory | room.RoomTrajectory:
    if isinstance(cfg, SeedConfig):
        return seed.trajectory(cfg, minutes, rng, start_month)
    return room.trajectory(cfg, minutes, rng, start_month)


def validation_set(cfg: EnvConfig, seed_value: int, days: int = 7) -> list[seed.SeedTrajectory | room.RoomTrajectory]:
    """One week per season (Jan, Apr, Jul, Oct), fixed by the seed, disjoint from the evaluation seeds."""
    rng = np.random.default_rng([seed_value, 7919])
    return [make_trajectory(cfg, days * MINUTES_PER_DAY, rng, month) for month in (0, 3, 6, 9)]


def score(cfg: EnvConfig, trajs: list[seed.SeedTrajectory | room.RoomTrajectory], weights: Weights) -> float:
    """Greedy evaluation-mode score: the room's reward (energy + comfort penalties); the seed's saving in units."""
    total = 0.0
    for traj in trajs:
        t = run(cfg, traj, Controller.network(weights)).totals
        total += t["reward"] if isinstance(cfg, RoomConfig) else t["builtin_energy_units"] - t["energy_units"]
    return total


class Replay:
    """Fixed-size ring buffer of transitions (the reference's memory keeps the latest `size`)."""

    def __init__(self, size: int, obs_dim: int) -> None:
        self.obs = np.zeros((size, obs_dim), dtype=np.float32)
        self.act = np.zeros(size, dtype=np.int64)
        self.rew = np.zeros(size, dtype=np.float32)
        self.nxt = np.zeros((size, obs_dim), dtype=np.float32)
        self.done = np.zeros(size, dtype=np.float32)
        self.size = size
        self.count = 0
        self.head = 0

    def push(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray, nxt: np.ndarray, done: np.ndarray) -> None:
        for i in range(len(act)):  # chunks are short (train_every_steps); a loop keeps the ring logic obvious
            j = self.head
            self.obs[j], self.act[j], self.rew[j], self.nxt[j], self.done[j] = obs[i], act[i], rew[i], nxt[i], done[i]
            self.head = (j + 1) % self.size
            self.count = min(self.count + 1, self.size)

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, ...]:
        idx = rng.choice(self.count, size=min(batch, self.count), replace=False)
        return (
            torch.from_numpy(self.obs[idx]),
            torch.from_numpy(self.act[idx]),
            torch.from_numpy(self.rew[idx]),
            torch.from_numpy(self.nxt[idx]),
            torch.from_numpy(self.done[idx]),
        )


@dataclass
class TrainResult:
    network: QNetwork
    episodes_run: int
    best_episode: int
    stopped_early: bool
    gradient_steps: int
    env_steps: int
    wall_s: float
    episode_rewards: list[float] = field(default_factory=list)
    validation_scores: list[float] = field(default_factory=list)


def _td_step(
    net: QNetwork, target: QNetwork | None, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], dqn: DQNConfig
) -> float:
    obs, act, rew, nxt, done = batch
    with torch.no_grad():
        q_next_online = net(nxt)
        if target is None:
            best_next = q_next_online.max(dim=1).values
        elif dqn.double_dqn:
            best_next = target(nxt).gather(1, q_next_online.argmax(dim=1, keepdim=True)).squeeze(1)
        else:
            best_next = target(nxt).max(dim=1).values
        goal = rew + dqn.discount * best_next * (1.0 - done)
    q = net(obs).gather(1, act[:, None]).squeeze(1)
    loss = nn.functional.mse_loss(q, goal) if dqn.loss == "mse" else nn.functional.smooth_l1_loss(q, goal)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def train(
    cfg: EnvConfig,
    dqn: DQNConfig,
    early_stopping_on: Literal["episode", "validation"] = "validation",
    log: Callable[[str], None] | None = None,
    init: QNetwork | None = None,
) -> TrainResult:
    """Train a DQN on `cfg`'s environment; returns the kept network (best validation, or last).
    `log` gets one line per episode, `episode N/MAX: ...` (the cooling stage's progress reads its counter)."""
    with torch_threads(1):
        return _train(cfg, dqn, early_stopping_on, log or (lambda _: None), init)


def _train(
    cfg: EnvConfig, dqn: DQNConfig, early_stopping_on: str, log: Callable[[str], None], init: QNetwork | None
) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(dqn.seed)
    rng = np.random.default_rng(dqn.seed)
    obs_dim, n_actions = dims(cfg)
    net = QNetwork(obs_dim, dqn.hidden_units, n_actions)
    if init is not None:
        net.load_state_dict(init.state_dict())
    target = None
    if dqn.target_sync_steps > 0:
        target = QNetwork(obs_dim, dqn.hidden_units, n_actions)
        target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=dqn.learning_rate)
    memory = Replay(dqn.memory_transitions, obs_dim)
    k = dqn.train_every_steps
    bufs = (np.zeros((k, obs_dim)), np.zeros(k, dtype=np.int64), np.zeros(k), np.zeros((k, obs_dim)), np.zeros(k))
    valid = validation_set(cfg, dqn.seed, dqn.validation_days) if early_stopping_on == "validation" else []
    best_score, best_episode, best_state, since_best = -np.inf, 0, net.state_dict(), 0
    result = TrainResult(net, 0, 0, False, 0, 0, 0.0)
    for episode in range(1, dqn.max_episodes + 1):
        month = int(rng.integers(12))
        minutes = dqn.episode_minutes
        traj = make_trajectory(cfg.for_training() if isinstance(cfg, SeedConfig) else cfg, minutes, rng, month)
        sim = Simulation(cfg, traj, Controller.network(net.weights()), train=True)
        total_reward, losses = 0.0, []
        while not sim.done:
            # While the memory is filling, update more often (down to every minute, as the reference does):
            # early episodes end within minutes, and one step per 64 minutes would learn nothing from them.
            chunk = min(k, max(1, memory.count * k // memory.size))
            steps = sim.advance(chunk, dqn.epsilon, rng.random(chunk), rng.integers(n_actions, size=chunk), bufs)
            if steps == 0:
                break
            memory.push(*(b[:steps] for b in bufs))
            total_reward += float(bufs[2][:steps].sum())
            result.env_steps += steps
            losses.append(_td_step(net, target, opt, memory.sample(rng, dqn.batch_size), dqn))
            result.gradient_steps += 1
            if target is not None and result.gradient_steps % dqn.target_sync_steps == 0:
                target.load_state_dict(net.state_dict())
            w = net.weights()
            sim.w = (w.w1, w.b1, w.w2, w.b2, w.w3, w.b3)
        result.episode_rewards.append(total_reward)
        current = score(cfg, valid, net.weights()) if valid else total_reward
        result.validation_scores.append(current) if valid else None
        improved = current > best_score
        if improved:
            best_score, best_episode, since_best = current, episode, 0
            best_state = {key: v.clone() for key, v in net.state_dict().items()}
        elif not valid or memory.count >= memory.size:
            # Validation mode: episodes before the replay memory is full are warm-up (the first ones end in
            # failures within minutes) and do not count towards patience; max_episodes still bounds them.
            since_best += 1
        log(
            f"episode {episode}/{dqn.max_episodes}: month {month + 1}, {sim.t:,} minutes, reward {total_reward:.2f}"
            + (f", validation {current:.2f}" if valid else "")
            + (", best" if improved else f", {since_best} without improvement")
            + f", loss {np.mean(losses) if losses else float('nan'):.3g}"
        )
        result.episodes_run = episode
        if since_best >= dqn.patience_episodes:
            result.stopped_early = True
            break
    if valid:  # keep the best-scoring weights; the reference keeps the last (episode mode)
        net.load_state_dict(best_state)
    result.best_episode = best_episode
    result.wall_s = time.perf_counter() - started
    return result


def distil(
    cfg: EnvConfig,
    teacher: QNetwork,
    hidden_units: tuple[int, int],
    seed_value: int,
    minutes: int = 4 * MINUTES_PER_MONTH,
    epochs: int = 30,
) -> tuple[QNetwork, float]:
    """A smaller student regressing the teacher's Q-values on states the teacher visits (10 % random actions
    for coverage). Returns the student and the final mean squared error."""
    with torch_threads(1):
        torch.manual_seed(seed_value)
        rng = np.random.default_rng([seed_value, 31])
        obs_dim, n_actions = dims(cfg)
        states = []
        for month in (0, 3, 6, 9):
            traj = make_trajectory(cfg, minutes // 4, rng, month)
            sim = Simulation(cfg, traj, Controller.network(teacher.weights()), train=False)
            n = traj.minutes
            bufs = (
                np.zeros((n, obs_dim)),
                np.zeros(n, dtype=np.int64),
                np.zeros(n),
                np.zeros((n, obs_dim)),
                np.zeros(n),
            )
            steps = sim.advance(n, 0.1, rng.random(n), rng.integers(n_actions, size=n), bufs)
            states.append(bufs[0][:steps])
        x = torch.from_numpy(np.concatenate(states).astype(np.float32))
        with torch.no_grad():
            y = teacher(x)
        student = QNetwork(obs_dim, hidden_units, n_actions)
        opt = torch.optim.Adam(student.parameters(), lr=3e-3)
        loss = torch.tensor(0.0)
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for start in range(0, len(x), 1024):
                idx = order[start : start + 1024]
                loss = nn.functional.mse_loss(student(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return student, float(loss.detach())


def save_agent(path: Path, net: QNetwork, spec: dict[str, object]) -> Path:
    """The state dict and a JSON spec (what to rebuild it with) in `path`."""
    path.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path / "agent.pt")
    (path / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
    return path


def load_agent(path: Path) -> tuple[QNetwork, dict[str, object]]:
    spec = json.loads((path / "spec.json").read_text())
    hidden = spec["hidden_units"]
    net = QNetwork(int(spec["obs_dim"]), (int(hidden[0]), int(hidden[1])), int(spec["n_actions"]))
    net.load_state_dict(torch.load(path / "agent.pt", weights_only=True))
    return net, spec
