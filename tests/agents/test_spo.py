"""SPO: the agent's relabelled buffer, its query budget, bad configs and end-to-end runs with every rater.

(Win rates, opponents and the trajectory queue are in test_self_play.py; trajectory cutting and the
relabelling buffer in tests/test_rollout.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# ---- the agent -----------------------------------------------------------------------------------------
# 2 envs x 100 steps, H = 50: 4 trajectories per rollout, each starting K = 3 comparisons (12 queries)
TINY_SPO = {
    "n_envs": 2,
    "policy_kwargs": {"net_arch": [16]},
    "ppo": {"n_steps": 100, "n_epochs": 1, "batch_size": 100},
    "spo": {"num_opponents": 3, "queue_size": 8},
}


def make_spo(spec, rater=None, seed: int = 0, overrides: dict | None = None):
    from prefrl.agents import make_agent
    from prefrl.config import load_agent_config
    from prefrl.raters.partial_return import PartialReturnRater
    from prefrl.spec_utils import deep_update

    config = load_agent_config("spo", spec.name, deep_update(TINY_SPO, overrides or {}))
    return make_agent("spo", spec, config, rater=rater or PartialReturnRater(), seed=seed)


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


def test_query_budget_is_counted_and_freezes_the_policy(flat_params, pendulum) -> None:
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


def test_unlimited_budget_and_determinism(flat_params, pendulum) -> None:
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
