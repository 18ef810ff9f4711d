"""rm_ppo: query schedule, pair selection, tiny end-to-end runs, clear errors for bad configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prefrl.agents import make_agent
from prefrl.agents.rm_ppo import RewardModelPPO
from prefrl.config import load_agent_config
from prefrl.errors import SpecError
from prefrl.experiment import run_experiment
from prefrl.feedback import query_allowance
from prefrl.raters import make_rater

#: a tiny PPO: rollouts of 2 envs x 128 steps, so a run of 768 steps has 3 rollouts and refits
TINY = {
    "n_envs": 2,
    "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2},
    "reward_model": {"net_arch": [16], "initial_epochs": 5, "epochs": 2, "refit_interval": 0},
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
    assert last["rm_pairs"] == last["queries_answered"]  # every answered query is a training or held-out pair
    assert last["queries"] == last["queries_asked"] >= last["queries_answered"]  # the budget counts asked


def test_budget_is_spent_on_schedule(pendulum, tmp_path: Path) -> None:
    config = load_agent_config("rm_ppo", "pendulum", TINY)
    agent = make_agent("rm_ppo", pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)
    assert isinstance(agent, RewardModelPPO)
    agent.learn(768, 40)
    # 3 rollouts with enough segments: the whole budget is asked, never more
    assert agent.num_queries == 40 == agent.trainer.num_pairs
    expected = query_allowance(40, [256, 512, 768], 0.25, "linear")
    np.testing.assert_array_equal(agent._allowance, expected)
    assert agent.trainer.num_fits == 3
    agent.close()


def _labelled_pairs(agent: RewardModelPPO) -> set[frozenset]:
    """Every labelled pair as the set of its two segments' contents (the trainer's stored features)."""
    features = agent.trainer._features
    return {frozenset((features[i].tobytes(), features[j].tobytes())) for i, j in agent.trainer._pairs}


@pytest.mark.parametrize("selection", ["uniform", "disagreement", "entropy", "kcenter_entropy"])
def test_pairs_are_never_asked_twice_and_the_budget_is_spent(pendulum, selection: str) -> None:
    # a small pool (1 rollout of 2 x 128 steps -> 10 segments, 45 pairs) against a budget of 120 queries:
    # the recent rollout alone runs short, so older buffered rollouts supply the rest
    overrides = {**TINY, "feedback": {"selection": selection, "pool_rollouts": 1, "candidate_factor": 2}}
    config = load_agent_config("rm_ppo", "pendulum", overrides)
    agent = make_agent("rm_ppo", pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)
    agent.learn(256 * 6, 120)
    assert agent.queries_asked == agent.queries_answered == 120 == agent.query_pool.num_asked
    assert len(_labelled_pairs(agent)) == 120
    agent.close()


@pytest.mark.parametrize(
    ("budget", "charged"), [("asked", "queries_asked"), ("answered", "queries_answered")]
)
def test_skipped_queries_cost_under_an_asked_budget(tmp_path: Path, budget: str, charged: str) -> None:
    progress = tiny_run(tmp_path, "partial_return+skip:eps=0.9", queries=40, feedback={"budget": budget})
    last = progress.iloc[-1]
    assert last["queries_answered"] < last["queries_asked"]  # the skip teacher dropped some
    assert last["queries"] == last[charged] == 40


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


@pytest.mark.parametrize("relabel", [True, False])
def test_rollout_rewards_come_from_one_batched_call_of_the_right_model(pendulum, relabel: bool) -> None:
    config = {**load_agent_config("rm_ppo", "pendulum"), **TINY, "feedback": {"relabel_rollout": relabel}}
    agent = make_agent("rm_ppo", pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)
    buffer = agent.model.rollout_buffer
    hook, seen = buffer.relabel_hook, []

    def spy(buffer):  # the rewards of the model before and after the hook's refit, beside the hook's
        features = agent.reward_env.rollout_log(last=buffer.buffer_size).features
        before = agent.reward_model.predict_mean(features)
        rewards = hook(buffer)
        seen.append((before, agent.reward_model.predict_mean(features), rewards))
        return rewards

    buffer.relabel_hook = spy
    agent.learn(768, 30)
    assert agent.trainer.num_fits == 3 and len(seen) == 3  # labels at every rollout: a refit each time
    assert not np.any(buffer.bootstrap)  # zero rewards during collection (no truncation in 128 steps)
    np.testing.assert_array_equal(seen[-1][2], buffer.relabelled)
    for before, after, rewards in seen:
        meant, other = (after, before) if relabel else (before, after)
        # a new model restarts the normaliser on exactly these rewards: standardised
        assert abs(rewards.mean()) < 1e-4 and abs(rewards.std() - 1.0) < 1e-3
        assert np.corrcoef(rewards.ravel(), meant.ravel())[0, 1] > 1 - 1e-6
        assert np.corrcoef(rewards.ravel(), other.ravel())[0, 1] < 1 - 1e-4


@pytest.mark.parametrize(
    ("refit_every", "refit_interval", "fits_at"),
    [(1, 0, [256, 512, 768, 1024]), (2, 0, [256, 768]), (1, 512, [256, 768]), (1, 10_000, [256])],
)
def test_refits_follow_new_labels_and_both_intervals(
    pendulum, refit_every: int, refit_interval: int, fits_at: list[int]
) -> None:
    rm = {**TINY["reward_model"], "refit_every": refit_every, "refit_interval": refit_interval}
    config = {**load_agent_config("rm_ppo", "pendulum"), **TINY, "reward_model": rm}
    agent = make_agent("rm_ppo", pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)
    fit, steps = agent.trainer.fit, []
    agent.trainer.fit = lambda *a: (steps.append(agent.model.num_timesteps), fit(*a))[1]
    agent.learn(1024, 40)  # 4 rollouts of 256 steps, labels after each
    assert steps == fits_at
