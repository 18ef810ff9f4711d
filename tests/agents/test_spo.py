"""SPO: win-rate arithmetic, trajectory cutting, the opponent queue, the buffer relabelling (no env reward
may reach PPO) and end-to-end runs with every rater."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from prefrl.agents.self_play import TrajectoryQueue, sample_opponents, win_rates
from prefrl.rollout import (
    RecordedRollout,
    RelabelRolloutBuffer,
    RolloutRecorder,
    cut_trajectories,
    spread_over_steps,
)
from prefrl.types import SegmentBatch


def make_segments(n: int, h: int = 4, source: int = 0, offset: float = 0.0) -> SegmentBatch:
    """``n`` segments whose reward sum is ``offset + index`` (so their identity is visible)."""
    reward = np.zeros((n, h))
    reward[:, 0] = offset + np.arange(n)
    return SegmentBatch(
        obs=np.zeros((n, h, 2)),
        act=np.zeros((n, h, 1)),
        reward=reward,
        factors=np.zeros((n, h, 1)),
        dones=np.zeros((n, h), dtype=bool),
        next_obs=np.zeros((n, 2)),
        source=np.full(n, source),
    )


# ---- win-rate arithmetic ------------------------------------------------------------------------------
def test_win_rate_of_a_trajectory_beating_all_others_is_one() -> None:
    # player 0 beats 1, 2, 3 whichever side it is on; 1 beats 2; 3 loses to everyone it meets
    pairs = np.array([[0, 1], [2, 0], [0, 3], [1, 2], [3, 1]])
    labels = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    rates, counts = win_rates(pairs, labels, num_players=4)
    np.testing.assert_allclose(rates, [1.0, 2 / 3, 0.0, 0.0])
    np.testing.assert_array_equal(counts, [3, 3, 2, 2])


def test_ties_count_one_half_and_skipped_comparisons_are_excluded() -> None:
    # 0 ties with 1 and beats 2; the (skipped) comparison 0-vs-3 is absent: 3 was never compared
    pairs = np.array([[0, 1], [2, 0]])
    labels = np.array([0.5, 0.0])
    rates, counts = win_rates(pairs, labels, num_players=4)
    np.testing.assert_allclose(rates, [0.75, 0.5, 0.0, 0.5])
    np.testing.assert_array_equal(counts, [2, 1, 1, 0])


def test_queued_opponents_get_no_credit_and_soft_labels_average() -> None:
    # indices >= num_players are older trajectories from the queue
    pairs = np.array([[0, 5], [4, 0], [1, 0]])
    labels = np.array([0.2, 0.9, 0.5])
    rates, counts = win_rates(pairs, labels, num_players=2)
    np.testing.assert_allclose(rates, [(0.2 + 0.1 + 0.5) / 3, 0.5])
    np.testing.assert_array_equal(counts, [3, 1])


def test_win_rates_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels must be"):
        win_rates(np.array([[0, 1]]), np.array([1.0, 0.0]), 2)


# ---- opponents ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("players", "pool", "k"), [(5, 5, 4), (8, 20, 3), (30, 50, 10)])
def test_sample_opponents_distinct_and_never_self(players: int, pool: int, k: int) -> None:
    rng = np.random.default_rng(0)
    pairs = sample_opponents(players, pool, k, rng)
    assert pairs.shape == (players * k, 2)
    assert pairs.min() >= 0 and pairs.max() < pool
    assert np.all(pairs[:, 0] != pairs[:, 1])
    # rows are grouped by player: each player starts exactly k comparisons with k distinct opponents
    for i, group in enumerate(pairs.reshape(players, k, 2)):
        assert np.all((group == i).sum(axis=1) == 1)
        others = group[group != i]
        assert len(np.unique(others)) == k


def test_sample_opponents_sides_are_balanced_and_opponents_uniform() -> None:
    rng = np.random.default_rng(1)
    pairs = sample_opponents(10, 40, 5, rng)
    players = np.repeat(np.arange(10), 5)
    first_share = np.mean(pairs[:, 0] == players)
    assert 0.4 < first_share < 0.6
    many = np.concatenate([sample_opponents(10, 40, 5, rng) for _ in range(200)])
    opponents = np.where(many[:, 0] == np.tile(players, 200), many[:, 1], many[:, 0])
    freq = np.bincount(opponents, minlength=40) / len(opponents)
    assert freq.min() > 0.5 / 39 and freq.max() < 2.0 / 39


def test_sample_opponents_rejects_too_many() -> None:
    with pytest.raises(ValueError, match="distinct opponents"):
        sample_opponents(4, 4, 4, np.random.default_rng(0))


# ---- trajectory cutting ------------------------------------------------------------------------------
def test_cut_trajectories_and_spread_round_trip() -> None:
    t, e, h = 12, 3, 4
    step_id = np.arange(t * e, dtype=np.float64).reshape(t, e)  # value = t * e + env
    rollout = RecordedRollout(
        obs=step_id[..., None],
        act=step_id[..., None],
        reward=step_id,
        factors=np.stack([step_id, -step_id], axis=-1),
        dones=np.zeros((t, e), dtype=bool),
        next_obs=(step_id + 0.5)[..., None],
    )
    batch = cut_trajectories(rollout, h, source=7)
    assert batch.num_segments == t // h * e and batch.length == h
    for k in range(t // h):
        for env in range(e):
            seg = batch[k * e + env]
            np.testing.assert_array_equal(seg.reward[0], step_id[k * h : (k + 1) * h, env])
            np.testing.assert_array_equal(seg.next_obs[0], [step_id[(k + 1) * h - 1, env] + 0.5])
    assert np.all(batch.source == 7)
    values = np.arange(batch.num_segments, dtype=np.float64)
    per_step = spread_over_steps(values, t, e, h)
    # summing each trajectory's steps gives its value back
    back = RecordedRollout(
        obs=rollout.obs, act=rollout.act, reward=per_step, factors=rollout.factors,
        dones=rollout.dones, next_obs=rollout.next_obs,
    )  # fmt: skip
    np.testing.assert_allclose(cut_trajectories(back, h).returns, values)


def test_cut_trajectories_rejects_misaligned_rollout() -> None:
    rollout = RecordedRollout(
        obs=np.zeros((10, 1, 1)), act=np.zeros((10, 1, 1)), reward=np.zeros((10, 1)),
        factors=np.zeros((10, 1, 0)), dones=np.zeros((10, 1), dtype=bool), next_obs=np.zeros((10, 1, 1)),
    )  # fmt: skip
    with pytest.raises(ValueError, match="multiple of the trajectory length"):
        cut_trajectories(rollout, 4)


# ---- queue -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [0, 3, 10, 25])
def test_queue_is_bounded_and_keeps_the_newest(capacity: int) -> None:
    queue = TrajectoryQueue(capacity)
    for step in range(6):
        queue.push(make_segments(4, source=step, offset=10 * step))
        assert len(queue) == min(capacity, 4 * (step + 1))
    if capacity:
        # newest last: the last pushed batch's segments end the queue, oldest ones were dropped
        expected = np.concatenate([10 * s + np.arange(4) for s in range(6)])[-capacity:]
        np.testing.assert_array_equal(queue.batch.returns, expected)
    else:
        assert queue.batch is None


# ---- the buffer relabelling: no env reward reaches PPO ----------------------------------------------
class HugeRewardEnv(gym.Env):
    """A 1-d random walk whose reward is a huge noisy constant (any leak into PPO would dominate)."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x = self.np_random.normal(size=2).astype(np.float32)
        return self.x, {}

    def step(self, action):
        self.x = np.clip(self.x + 0.1 * float(action[0]), -10, 10).astype(np.float32)
        reward = 1e6 + 1e5 * self.np_random.normal()
        return self.x, reward, False, False, {"factors": np.array([float(action[0])])}


def gae_reference(rewards, values, starts, last_values, last_dones, gamma, lam) -> np.ndarray:
    """Plain-loop GAE returns (independent of SB3's code path)."""
    t = rewards.shape[0]
    adv = np.zeros_like(rewards)
    last = 0.0
    for step in reversed(range(t)):
        if step == t - 1:
            nonterminal, next_v = 1.0 - last_dones, last_values
        else:
            nonterminal, next_v = 1.0 - starts[step + 1], values[step + 1]
        delta = rewards[step] + gamma * next_v * nonterminal - values[step]
        last = delta + gamma * lam * nonterminal * last
        adv[step] = last
    return adv + values


@pytest.mark.parametrize("keep_bootstrap", [True, False])
def test_buffer_rewards_and_returns_come_from_the_hook_only(keep_bootstrap: bool) -> None:
    n_envs, n_steps, horizon = 2, 40, 10
    venv = DummyVecEnv(
        [lambda: gym.wrappers.TimeLimit(HugeRewardEnv(), max_episode_steps=horizon) for _ in range(n_envs)]
    )
    recorder = RolloutRecorder(venv)
    seen: dict[str, np.ndarray] = {}

    def hook(buffer: RelabelRolloutBuffer) -> np.ndarray:
        rollout = recorder.pop(buffer.buffer_size)
        seen["true"] = rollout.reward
        seen["obs"] = rollout.obs
        seen["values"] = buffer.values.copy()
        seen["stored"] = buffer.rewards.copy()
        return (rollout.obs[..., 0] > 0).astype(np.float32) / 5  # any reward computed from the record

    model = PPO(
        "MlpPolicy", recorder, n_steps=n_steps, batch_size=40, n_epochs=1, seed=0, gamma=0.9,
        rollout_buffer_class=RelabelRolloutBuffer,
        rollout_buffer_kwargs={"relabel_hook": hook, "keep_bootstrap": keep_bootstrap},
        policy_kwargs={"net_arch": [8]},
    )  # fmt: skip
    # stop right after the first rollout's advantages are computed (before the update)
    from stable_baselines3.common.callbacks import BaseCallback

    class Grab(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            buf = self.model.rollout_buffer
            seen["rewards"], seen["returns"] = buf.rewards.copy(), buf.returns.copy()
            seen["starts"], seen["dones"] = buf.episode_starts.copy(), self.locals["dones"].copy()
            seen["last_values"] = self.locals["values"].numpy().ravel()

    model.learn(n_steps * n_envs, callback=Grab())
    assert np.all(seen["true"] > 1e5)  # the recorder saw the real, huge reward...
    bootstrap = seen["stored"]
    truncated = np.zeros((n_steps, n_envs), dtype=bool)
    truncated[horizon - 1 :: horizon] = True
    # ...but SB3 stored only the timeout bootstrap gamma * V(terminal_obs): zero on every other step
    assert np.all(bootstrap[~truncated] == 0.0)
    assert np.all(np.abs(bootstrap) < 100.0)
    expected = (seen["obs"][..., 0] > 0) / 5 + (bootstrap if keep_bootstrap else 0.0)
    np.testing.assert_allclose(seen["rewards"], expected, rtol=1e-6, atol=1e-6)
    ref = gae_reference(
        expected, seen["values"], seen["starts"], seen["last_values"], seen["dones"], 0.9, 0.95
    )
    np.testing.assert_allclose(seen["returns"], ref, rtol=1e-4, atol=1e-4)
    assert np.abs(seen["returns"]).max() < 100.0


def test_buffer_without_hook_refuses_to_compute_advantages() -> None:
    venv = DummyVecEnv([lambda: gym.wrappers.TimeLimit(HugeRewardEnv(), max_episode_steps=8)])
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, rollout_buffer_class=RelabelRolloutBuffer)
    with pytest.raises(RuntimeError, match="no relabel_hook"):
        model.learn(16)


# ---- the agent -----------------------------------------------------------------------------------------
# 2 envs x 100 steps, H = 50: 4 trajectories per rollout, each starting K = 3 comparisons (12 queries)
TINY_SPO = {
    "n_envs": 2,
    "policy_kwargs": {"net_arch": [16]},
    "ppo": {"n_steps": 100, "n_epochs": 1, "batch_size": 100},
    "spo": {"num_opponents": 3, "queue_size": 8},
}


@pytest.fixture(scope="module")
def pendulum():
    from prefrl.envs import load_env_spec

    return load_env_spec("pendulum")


def make_spo(spec, rater=None, seed: int = 0, overrides: dict | None = None):
    from prefrl.agents import make_agent
    from prefrl.config import load_agent_config
    from prefrl.raters.partial_return import PartialReturnRater
    from prefrl.spec_utils import deep_update

    config = load_agent_config("spo", spec.name, deep_update(TINY_SPO, overrides or {}))
    return make_agent("spo", spec, config, rater=rater or PartialReturnRater(), seed=seed)


def flat_params(agent):
    import torch

    return torch.cat([p.detach().flatten() for p in agent.model.policy.parameters()])


@pytest.mark.parametrize("centre", [False, True])
def test_agent_buffer_holds_win_rate_rewards_not_env_rewards(pendulum, centre: bool) -> None:
    agent = make_spo(pendulum, overrides={"spo": {"centre": centre}})
    agent.learn(600, 0)  # 3 rollouts: the queue holds earlier trajectories by the last one
    buf = agent.model.rollout_buffer
    h = 50
    # one constant reward per trajectory (w / H spread over its steps), w in [0, 1]
    chunks = buf.relabelled.reshape(2, h, 2)
    assert np.all(chunks == chunks[:, :1])
    w = chunks[:, 0] * h + (0.5 if centre else 0.0)
    assert np.all((w >= 0.0) & (w <= 1.0))
    np.testing.assert_allclose(w.mean(), agent.metrics()["mean_win_rate"], atol=1e-6)
    # Pendulum's true rewards are in [-16.3, 0]: what PPO trained on is the relabelled reward plus the
    # time-limit bootstrap only (nonzero on the episode's last step at most)
    np.testing.assert_allclose(buf.rewards, buf.relabelled + buf.bootstrap, atol=1e-7)
    assert np.all(buf.bootstrap[:-1] == 0.0)
    assert agent.num_queries == 3 * 12 and len(agent.queue) == 8
    agent.close()


def test_query_budget_is_counted_and_freezes_the_policy(pendulum) -> None:
    agent = make_spo(pendulum)
    agent.learn(400, 18)  # rollout 1: 12 queries, rollout 2: a random 6 of its 12
    assert agent.num_queries == 18
    assert agent.metrics()["rollout_queries"] == 6 and 0 < agent.metrics()["compared_fraction"] <= 1
    before = flat_params(agent).clone()
    agent.learn(200, 18)  # budget spent: no query, policy unchanged
    assert agent.num_queries == 18 and agent.metrics()["compared_fraction"] == 0.0
    import torch

    assert torch.equal(flat_params(agent), before)
    agent.close()


def test_unlimited_budget_and_determinism(pendulum) -> None:
    # SB3 draws actions from torch's global generator: build and train one agent after the other
    a = make_spo(pendulum, seed=5)
    a.learn(400, 0)
    b = make_spo(pendulum, seed=5)
    b.learn(400, 0)
    import torch

    assert torch.equal(flat_params(a), flat_params(b)) and a.num_queries == b.num_queries == 24
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ppo": {"n_steps": 120}}, "multiple of the trajectory length H=50"),
        ({"spo": {"num_opponents": 4}}, "too few for num_opponents=4"),
        ({"spo": {"queue_size": -1}}, "queue_size must be an integer"),
    ],
)
def test_agent_rejects_bad_config(pendulum, overrides: dict, message: str) -> None:
    from prefrl.errors import SpecError

    with pytest.raises(SpecError, match=message):
        make_spo(pendulum, overrides=overrides)


# ---- end to end: run_experiment with every rater --------------------------------------------------------
RATERS = [
    "partial_return",
    "regret",
    "intransitive",
    "non_markovian",
    "hierarchical",
    "panel",
    "panel:mode=majority",
    "stoc",
    "mistake:eps=0.2",
    "skip:eps=0.5",
    "equal:eps=0.5",
    "myopic",
    "intransitive+mistake:eps=0.2",
]


@pytest.mark.parametrize("rater", RATERS)
def test_run_experiment_with_every_rater(tmp_path, pendulum, rater: str) -> None:
    from prefrl.experiment import run_experiment
    from prefrl.raters import make_rater

    try:
        make_rater(rater, pendulum)
    except ValueError as err:  # regret needs an oracle value function, which may not be trained yet
        pytest.skip(f"{rater} unavailable on pendulum: {err}")
    run_dir = run_experiment(
        "pendulum", "spo", rater, seed=0, steps=600, queries=30, out=tmp_path / "run",
        overrides=TINY_SPO, eval_freq=200, n_eval_episodes=2,
    )  # fmt: skip
    table = pd.read_csv(run_dir / "progress.csv")
    assert table["env_steps"].tolist() == [0, 200, 400, 600]
    assert {"mean_win_rate", "win_rate_std", "compared_fraction", "queries"} <= set(table.columns)
    # 12 comparisons per rollout are asked; only answered ones count, and never more than the budget
    assert table["queries"].is_monotonic_increasing and 0 < table["queries"].iloc[-1] <= 30
    win = table["mean_win_rate"].dropna()
    assert len(win) and ((win >= 0) & (win <= 1)).all()
    assert (run_dir / "done").is_file()
