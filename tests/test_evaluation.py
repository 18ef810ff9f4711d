"""Evaluation on the true reward, the progress schedule and the CSV log."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from prefrl.agents import PPOAgent
from prefrl.config import load_agent_config
from prefrl.envs import make_env
from prefrl.evaluation import (
    BASE_COLUMNS,
    EVAL_SEED_OFFSET,
    CSVLog,
    ProgressHook,
    episode_returns,
    evaluate_policy,
)


def constant_policy(value: float):
    def predict(obs: np.ndarray) -> np.ndarray:
        return np.full((obs.shape[0], 1), value, dtype=np.float32)

    return predict


class FakeAgent:
    """Just what ProgressHook needs: predict, the query counts, metrics."""

    def __init__(self, action: float = 0.0, metrics: dict | None = None):
        self.predict = constant_policy(action)
        self.num_queries, self.queries_asked, self.queries_answered = 7, 9, 7
        self._metrics = metrics or {}

    def metrics(self):
        return dict(self._metrics)


@pytest.mark.parametrize("action", [-2.0, 0.0, 1.5])
def test_returns_match_a_manual_rollout(pendulum, action):
    seed, n = 3, 3
    returns = episode_returns(constant_policy(action), pendulum, n, seed)
    for i in range(n):  # VecEnv env i is seeded seed + i
        env = make_env(pendulum)
        env.reset(seed=seed + i)
        total, steps, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(np.array([action], dtype=np.float32))
            total, steps, done = total + reward, steps + 1, terminated or truncated
        assert steps == pendulum.horizon  # fixed horizon
        # VecEnvs store rewards as float32
        assert returns[i] == pytest.approx(total, rel=1e-6)


def test_episodes_last_exactly_the_horizon(pendulum):
    calls = []

    def predict(obs):
        calls.append(obs.shape)
        return np.zeros((obs.shape[0], 1), dtype=np.float32)

    evaluate_policy(predict, pendulum, n_episodes=4, seed=0)
    assert len(calls) == pendulum.horizon and calls[0] == (4, 3)


def test_evaluation_is_seeded(pendulum):
    policy = constant_policy(0.5)
    first = evaluate_policy(policy, pendulum, 3, seed=1)
    assert evaluate_policy(policy, pendulum, 3, seed=1) == first
    assert evaluate_policy(policy, pendulum, 3, seed=2) != first
    mean, std = first
    returns = episode_returns(policy, pendulum, 3, seed=1)
    assert mean == pytest.approx(returns.mean()) and std == pytest.approx(returns.std())


class ZeroReward(VecEnvWrapper):
    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return obs, np.zeros_like(rewards), dones, infos


class ZeroRewardPPO(PPOAgent):
    name = "_zero_reward_ppo"

    def wrap_env(self, venv: VecEnv) -> VecEnv:
        return ZeroReward(venv)


def test_evaluation_uses_the_true_reward_not_the_training_one(pendulum, tmp_path):
    config = load_agent_config(
        "ppo", "pendulum", {"n_envs": 2, "policy_kwargs": {"net_arch": [16]}, "ppo": {"n_steps": 64}}
    )
    agent = ZeroRewardPPO(pendulum, config, seed=0)
    hook = ProgressHook(pendulum, eval_freq=128, n_eval_episodes=2, seed=0, run_dir=tmp_path)
    agent.learn(256, 0, hook)
    hook.close()
    assert np.all(agent.model.rollout_buffer.rewards == 0.0)  # the agent trained on zeros...
    returns = [row["true_return_mean"] for row in hook.rows]
    assert len(returns) == 3 and all(r < -50 for r in returns)  # ...but is scored on Pendulum's costs
    # the last row scores the final policy on the true reward (recomputed independently)
    mean, _ = evaluate_policy(agent.predict, pendulum, 2, seed=EVAL_SEED_OFFSET)
    assert returns[-1] == pytest.approx(mean)
    agent.close()


def test_progress_schedule_and_columns(pendulum, tmp_path):
    spec = dataclasses.replace(pendulum, random_return=None, oracle_return=None)
    hook = ProgressHook(spec, eval_freq=10, n_eval_episodes=1, seed=0, run_dir=tmp_path)
    agent = FakeAgent(metrics={"rm/accuracy": 0.75})
    for step in range(0, 37, 4):
        hook.maybe_eval(step, agent, extra={"train/loss": 1.0} if step else None)
    hook.on_end(36, agent)  # final evaluation, 36 not evaluated yet
    hook.on_end(36, agent)  # no duplicate row
    hook.close()
    steps = [row["env_steps"] for row in hook.rows]
    assert steps == [0, 12, 20, 32, 36]
    table = pd.read_csv(tmp_path / "progress.csv")
    assert list(table.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert list(table["env_steps"]) == steps and (table["queries"] == 7).all()
    assert table["normalised_score"].isna().all()  # this spec has no normalisation anchors
    assert (table["rm/accuracy"] == 0.75).all()
    # extra scalars only in the rows that had them (the hook is called without them at 0 and at the end)
    assert table["train/loss"].tolist()[1:4] == [1.0, 1.0, 1.0]
    assert math.isnan(table["train/loss"][0]) and math.isnan(table["train/loss"][4])
    assert table["wall_s"].is_monotonic_increasing
    assert any((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_normalised_score_when_anchors_are_set(pendulum):
    spec = dataclasses.replace(pendulum, random_return=-1200.0, oracle_return=-200.0)
    hook = ProgressHook(spec, eval_freq=10, n_eval_episodes=2, seed=0)
    row = hook.on_eval(0, FakeAgent())
    hook.close()
    assert row["normalised_score"] == pytest.approx(100 * (row["true_return_mean"] + 1200) / 1000)


@pytest.mark.parametrize("eval_freq, episodes", [(0, 1), (10, 0)])
def test_hook_rejects_bad_settings(pendulum, eval_freq, episodes):
    with pytest.raises(ValueError):
        ProgressHook(pendulum, eval_freq=eval_freq, n_eval_episodes=episodes, seed=0)


def test_csv_log_is_valid_after_every_row_and_widens(tmp_path):
    path = tmp_path / "progress.csv"
    log = CSVLog(path, ("a", "b"))
    rows = [{"a": 1, "b": 2.5}, {"a": 2, "b": 3.5, "c": 9.0}, {"a": 3, "b": 4.5}, {"a": 4, "d": 1.0}]
    for k, row in enumerate(rows, start=1):
        log.append(row)
        # a reader at any moment (a killed run) sees a complete, rectangular table
        table = pd.read_csv(path)
        assert len(table) == k
    assert list(table.columns) == ["a", "b", "c", "d"]
    assert table["c"].isna().tolist() == [True, False, True, True]
    assert table["a"].tolist() == [1, 2, 3, 4]
    assert not list(tmp_path.glob("*.tmp"))


def test_csv_log_interrupted_rewrite_keeps_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    # a sweep worker's SIGTERM is raised as an exception inside the run: if it lands while a new column
    # rewrites the file, the previous file must stay whole and no temporary file may be left behind
    path = tmp_path / "progress.csv"
    log = CSVLog(path, ("a",))
    log.append({"a": 1})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("prefrl.evaluation.os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        log.append({"a": 2, "b": 3})
    assert pd.read_csv(path)["a"].tolist() == [1]
    assert not list(tmp_path.glob("*.tmp"))
