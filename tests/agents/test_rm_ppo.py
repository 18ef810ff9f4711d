"""rm_ppo: query schedule, pair selection, tiny end-to-end runs, clear errors for bad configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prefrl.agents import make_agent
from prefrl.agents.rm_ppo import RewardModelPPO, query_schedule
from prefrl.config import load_agent_config
from prefrl.errors import SpecError
from prefrl.experiment import run_experiment
from prefrl.raters import make_rater

#: a tiny PPO: rollouts of 2 envs x 128 steps, so a run of 768 steps has 3 rollouts and refits
TINY = {
    "n_envs": 2,
    "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2},
    "reward_model": {"net_arch": [16], "initial_epochs": 5, "epochs": 2},
}
RM_COLUMNS = {"queries", "rm_accuracy", "rm_new_accuracy", "reward_corr", "rm_loss"}


def tiny_run(tmp_path: Path, rater: str, queries: int = 30, seed: int = 0, **overrides) -> pd.DataFrame:
    config = {**TINY, **overrides}
    run_dir = run_experiment(
        "pendulum",
        "rm_ppo",
        rater,
        seed=seed,
        steps=768,
        queries=queries,
        out=tmp_path / f"run_{seed}",
        overrides=config,
        eval_freq=384,
        n_eval_episodes=1,
        progress_bar=False,
    )
    assert (run_dir / "done").exists() and (run_dir / "reward_model.pt").exists()
    return pd.read_csv(run_dir / "progress.csv")


# ---- schedule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inverse", "linear", "constant"])
@pytest.mark.parametrize(("budget", "rollouts"), [(500, 25), (7, 10), (100, 1)])
def test_query_schedule_is_cumulative_and_ends_at_budget(kind: str, budget: int, rollouts: int) -> None:
    allowance = query_schedule(budget, rollouts, 0.25, kind)
    assert allowance.shape == (rollouts,)
    assert allowance[-1] == budget
    assert np.all(np.diff(allowance) >= 0)
    assert allowance[0] >= int(0.25 * budget)


def test_query_schedule_decays() -> None:
    per_rollout = np.diff(query_schedule(10_000, 20, 0.25, "inverse"))
    assert np.all(np.diff(per_rollout) <= 1)  # non-increasing up to rounding
    assert per_rollout[0] > 5 * per_rollout[-1]
    constant = np.diff(query_schedule(10_000, 20, 0.0, "constant"))
    assert constant.max() - constant.min() <= 1


def test_query_schedule_rejects_bad_values() -> None:
    with pytest.raises(SpecError, match="did you mean 'linear'"):
        query_schedule(10, 5, 0.25, "linaer")
    with pytest.raises(SpecError, match="initial_query_share"):
        query_schedule(10, 5, 1.5)


# ---- end to end -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rater", "selection"),
    [
        ("partial_return", "disagreement"),
        ("partial_return", "uniform"),
        ("partial_return+equal:eps=0.5", "uniform"),  # ties (0.5 labels)
        ("partial_return+skip:eps=0.5", "disagreement"),  # skipped queries removed
    ],
)
def test_tiny_run_writes_reward_model_columns(tmp_path: Path, rater: str, selection: str) -> None:
    progress = tiny_run(tmp_path, rater, feedback={"selection": selection})
    assert RM_COLUMNS <= set(progress.columns)
    last = progress.iloc[-1]
    assert 0 < last["queries"] <= 30
    assert progress["queries"].is_monotonic_increasing
    assert -1.0 <= last["reward_corr"] <= 1.0
    assert last["rm_pairs"] == last["queries"]  # every answered query is a training or held-out pair


def test_budget_is_spent_on_schedule(pendulum, tmp_path: Path) -> None:
    config = load_agent_config("rm_ppo", "pendulum", TINY)
    agent = make_agent("rm_ppo", pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)
    assert isinstance(agent, RewardModelPPO)
    agent.learn(768, 40)
    # 3 rollouts with enough segments: the whole budget is asked, never more
    assert agent.num_queries == 40 == agent.trainer.num_pairs
    np.testing.assert_array_equal(agent._allowance, query_schedule(40, 3, 0.25, "inverse"))
    assert agent.trainer.num_fits == 3
    agent.close()


def test_same_seed_same_run(tmp_path: Path) -> None:
    a = tiny_run(tmp_path / "a", "partial_return", seed=3)
    b = tiny_run(tmp_path / "b", "partial_return", seed=3)
    cols = ["env_steps", "queries", "true_return_mean", "rm_loss", "reward_corr"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


# ---- bad configs ------------------------------------------------------------------------------------


def test_zero_queries_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="query budget must be > 0"):
        tiny_run(tmp_path, "partial_return", queries=0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"feedback": {"selection": "disagreemnt"}}, "did you mean 'disagreement'"),
        ({"feedback": {"schedule": "exponential"}}, "unknown schedule"),
        ({"feedback": {"initial_query_share": 2.0}}, "initial_query_share"),
        ({"reward_model": {"ensemble_size": 1}}, "ensemble_size >= 2"),
        ({"reward_model": {"inputs": "pixels"}}, "unknown input mode"),
        ({"reward_model": {"activation": "swish"}}, "unknown activation"),
        ({"feedback": {"pool_rollout": 2}}, "did you mean 'pool_rollouts'"),
    ],
)
def test_bad_configs_fail_clearly(pendulum, overrides: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        config = load_agent_config("rm_ppo", "pendulum", {**TINY, **overrides})
        make_agent("rm_ppo", pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)


def test_needs_a_rater(pendulum) -> None:
    with pytest.raises(ValueError, match="needs a rater"):
        make_agent("rm_ppo", pendulum, load_agent_config("rm_ppo", "pendulum", TINY), rater=None)
