"""The DQN's learning rules, with values worked out by hand: the TD target (plain, target network,
double DQN, terminal masking), target-network sync, the replay ring buffer, early stopping on validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tasks.cooling import dqn
from tasks.cooling.fast_eval import Weights
from thresholds.cooling.env import DQNConfig, RoomConfig

# ---- TD target --------------------------------------------------------------------------------------
# Two states, two actions, identity hidden layers: for states >= 0 the online network is Q(s) = s and the
# target network Q_t(s) = 10 * (s[1], s[0]) (actions swapped), so the online argmax and the target's differ.
#
#   transition  obs     act  reward  next    done   Q(obs, act)
#   0           (2, 0)  0     1      (1, 3)  0      2
#   1           (0, 4)  1    -1      (5, 2)  1      4
#
# discount 0.5; next state (1, 3): online Q = (1, 3), argmax 1; target Q_t = (30, 10).
#   no target network:  1 + 0.5 * max(1, 3)            = 2.5
#   target network:     1 + 0.5 * max(30, 10)           = 16
#   double DQN:         1 + 0.5 * Q_t[argmax Q = 1]     = 6
# transition 1 is terminal: its target is the reward alone, -1 (unmasked it would be 1.5 / 24 / 9).
# MSE = ((2 - goal0)^2 + (4 - (-1))^2) / 2.


def _net(last: list[list[float]]) -> dqn.QNetwork:
    net = dqn.QNetwork(2, (2, 2), 2)
    with torch.no_grad():
        for layer, weight in zip(
            [m for m in net.net if isinstance(m, torch.nn.Linear)], (np.eye(2), np.eye(2), last), strict=True
        ):
            layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
            layer.bias.zero_()
    return net


def _batch() -> tuple[torch.Tensor, ...]:
    obs = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    act = torch.tensor([0, 1])
    rew = torch.tensor([1.0, -1.0])
    nxt = torch.tensor([[1.0, 3.0], [5.0, 2.0]])
    done = torch.tensor([0.0, 1.0])
    return obs, act, rew, nxt, done


def _config(**changes: Any) -> DQNConfig:
    return DQNConfig(**{"discount": 0.5, "loss": "mse", **changes})


@pytest.mark.parametrize(
    ("with_target", "double", "goal0"),
    [(False, False, 2.5), (True, False, 16.0), (True, True, 6.0)],
    ids=["no-target-network", "target-network", "double-dqn"],
)
def test_td_loss_uses_the_right_next_value_and_masks_terminal_states(
    with_target: bool, double: bool, goal0: float
) -> None:
    net, target = _net(np.eye(2).tolist()), _net([[0.0, 10.0], [10.0, 0.0]])
    frozen = torch.optim.SGD(net.parameters(), lr=0.0)
    loss = dqn._td_step(net, target if with_target else None, frozen, _batch(), _config(double_dqn=double))
    assert loss == pytest.approx(((2.0 - goal0) ** 2 + (4.0 - -1.0) ** 2) / 2)


def test_huber_td_loss_by_hand() -> None:
    # Double DQN errors 4 and 5: smooth L1 (beta 1) is |d| - 0.5 beyond 1, so (3.5 + 4.5) / 2.
    net, target = _net(np.eye(2).tolist()), _net([[0.0, 10.0], [10.0, 0.0]])
    loss = dqn._td_step(
        net, target, torch.optim.SGD(net.parameters(), lr=0.0), _batch(), _config(double_dqn=True, loss="huber")
    )
    assert loss == pytest.approx(4.0)


def test_a_td_step_moves_the_online_network_towards_the_goal_and_not_the_target() -> None:
    net, target = _net(np.eye(2).tolist()), _net([[0.0, 10.0], [10.0, 0.0]])
    target_before = {k: v.clone() for k, v in target.state_dict().items()}
    obs, act, *_ = _batch()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    first = dqn._td_step(net, target, opt, _batch(), _config(double_dqn=True))
    second = dqn._td_step(net, target, opt, _batch(), _config(double_dqn=True))
    assert second < first == pytest.approx(20.5)
    with torch.no_grad():
        q = net(obs).gather(1, act[:, None]).squeeze(1)
    assert q[0] > 2.0 and q[1] < 4.0  # towards the goals 6 and -1
    assert all(torch.equal(v, target_before[k]) for k, v in target.state_dict().items())


# ---- Replay memory ----------------------------------------------------------------------------------


def _transitions(first: int, n: int) -> tuple[np.ndarray, ...]:
    """Transition i: obs (i, -i), action i % 3, reward 10 i, next (i + 1, -i - 1), done on odd i."""
    i = np.arange(first, first + n)
    return np.stack([i, -i], 1), i % 3, 10.0 * i, np.stack([i + 1, -i - 1], 1), (i % 2).astype(float)


def _rows(batch: tuple[torch.Tensor, ...]) -> list[tuple[float, ...]]:
    obs, act, rew, nxt, done = (t.numpy() for t in batch)
    columns = (obs[:, 0], obs[:, 1], act, rew, nxt[:, 0], nxt[:, 1], done)
    return sorted(tuple(float(c[j]) for c in columns) for j in range(len(act)))


def _expected(indices: list[int]) -> list[tuple[float, ...]]:
    return sorted((i, -i, i % 3, 10.0 * i, i + 1, -i - 1, i % 2) for i in indices)


def test_replay_samples_only_what_was_pushed_then_keeps_the_latest() -> None:
    memory = dqn.Replay(3, 2)
    memory.push(*_transitions(1, 2))
    assert (memory.count, memory.head) == (2, 2)
    # Never the empty third slot, each transition at most once, its fields kept together.
    assert _rows(memory.sample(np.random.default_rng(0), 5)) == _expected([1, 2])
    memory.push(*_transitions(3, 2))  # transition 4 overwrites the oldest, 1, in slot 0
    assert (memory.count, memory.head) == (3, 1)
    assert memory.obs[:, 0].tolist() == [4.0, 2.0, 3.0]
    assert _rows(memory.sample(np.random.default_rng(0), 10)) == _expected([2, 3, 4])
    picked = memory.sample(np.random.default_rng(1), 2)
    assert len(picked[1]) == 2 and set(_rows(picked)) <= set(_expected([2, 3, 4]))


def test_replay_sample_dtypes_fit_the_td_step() -> None:
    memory = dqn.Replay(4, 2)
    memory.push(*_transitions(0, 4))
    obs, act, rew, nxt, done = memory.sample(np.random.default_rng(0), 4)
    assert obs.dtype == nxt.dtype == rew.dtype == done.dtype == torch.float32 and act.dtype == torch.int64


# ---- Training loop: target sync and early stopping ----------------------------------------------------

ROOM = RoomConfig()


def _tiny(**changes: Any) -> DQNConfig:
    base = {"hidden_units": (4, 4), "memory_transitions": 16, "batch_size": 8, "train_every_steps": 4,
            "episode_minutes": 120, "max_episodes": 1, "validation_days": 1, "epsilon": 0.5}  # fmt: skip
    return DQNConfig(**{**base, **changes})


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_target_network_is_the_online_network_of_the_last_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]] = []
    real = dqn._td_step

    def spy(net: dqn.QNetwork, target: dqn.QNetwork | None, *args: Any) -> float:
        seen.append((_state(net), None if target is None else _state(target)))
        return real(net, target, *args)

    monkeypatch.setattr(dqn, "_td_step", spy)
    dqn.train(ROOM, _tiny(target_sync_steps=3), early_stopping_on="episode")
    assert len(seen) >= 10
    for i, (online, target) in enumerate(seen):  # call i comes after i gradient steps
        synced_at = (i // 3) * 3  # copied after steps 3, 6, 9, ... (and at the start)
        assert target is not None and _same(target, seen[synced_at][0]), f"gradient step {i + 1}: stale or early target"
        if i != synced_at:
            assert not _same(
                online, seen[synced_at][0]
            )  # the online network moved since: the check can tell them apart

    seen.clear()
    dqn.train(ROOM, _tiny(target_sync_steps=0), early_stopping_on="episode")
    assert seen and all(target is None for _, target in seen)  # 0: no target network, as in the reference


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, scores: list[float]) -> list[Weights]:
    """Validation scores in the given order; returns the weights each episode was scored with."""
    scored: list[Weights] = []

    def fake_score(cfg: object, trajs: list[object], weights: Weights) -> float:
        assert len(trajs) == 4  # one validation week per season
        scored.append(weights)
        return scores[len(scored) - 1]

    monkeypatch.setattr(dqn, "score", fake_score)
    return scored


def _weights_equal(a: Weights, b: Weights) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("w1", "b1", "w2", "b2", "w3", "b3"))


def test_early_stopping_on_validation_stops_after_patience_and_keeps_the_best_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Scores 1, 3, 3, 2: episode 2 is best; 3 only ties (not an improvement); patience 2 runs out after episode 4.
    scored = _scripted_validation(monkeypatch, [1.0, 3.0, 3.0, 2.0, 5.0, 9.0])
    result = dqn.train(ROOM, _tiny(max_episodes=6, patience_episodes=2), early_stopping_on="validation")
    assert (result.episodes_run, result.best_episode, result.stopped_early) == (4, 2, True)
    assert result.validation_scores == [1.0, 3.0, 3.0, 2.0]
    assert _weights_equal(result.network.weights(), scored[1])  # the best episode's weights, not the last
    assert not _weights_equal(scored[1], scored[3])


def test_an_improvement_resets_the_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted_validation(monkeypatch, [1.0, 0.0, 2.0, 1.0, 1.0, 9.0])
    result = dqn.train(ROOM, _tiny(max_episodes=6, patience_episodes=2), early_stopping_on="validation")
    assert (result.episodes_run, result.best_episode, result.stopped_early) == (5, 3, True)


def test_episodes_before_the_replay_memory_is_full_do_not_use_up_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    # 5 episodes of 120 minutes never fill a 10,000-transition memory: warm-up, however bad the scores.
    scored = _scripted_validation(monkeypatch, [3.0, 2.0, 1.0, 0.0, -1.0])
    result = dqn.train(
        ROOM, _tiny(max_episodes=5, patience_episodes=2, memory_transitions=10_000), early_stopping_on="validation"
    )
    assert (result.episodes_run, result.best_episode, result.stopped_early) == (5, 1, False)
    assert _weights_equal(result.network.weights(), scored[0])
