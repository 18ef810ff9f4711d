"""LearnedRewardAgent: what rm_ppo, heron and pebble share (sections, learner, counters, metrics, saving)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prefrl.agents import make_agent
from prefrl.agents.learned_reward import LearnedRewardAgent
from prefrl.config import load_agent_config
from prefrl.errors import ConfigError
from prefrl.raters import make_rater
from prefrl.reward_learning import pearson_correlation
from prefrl.reward_model import feature_dim

PPO_TINY = {"n_envs": 2, "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 1}}
# agent, rater, the agent's tiny settings
AGENTS = [
    ("rm_ppo", "partial_return", PPO_TINY),
    ("heron", "hierarchical", PPO_TINY),
    (
        "pebble",
        "partial_return",
        {"policy_kwargs": {"net_arch": [16]}, "sac": {"learning_starts": 50, "buffer_size": 500}},
    ),
]


# ---- pearson_correlation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 1.0),
        ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], -1.0),
        ([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 5.0]], 0.9827076298239908),  # flattened
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], float("nan")),  # constant side
        ([1.0], [2.0], float("nan")),  # one value
    ],
)
def test_pearson_correlation(a, b, expected):
    assert pearson_correlation(np.array(a), np.array(b)) == pytest.approx(expected, nan_ok=True)


def test_pearson_correlation_is_invariant_to_affine_maps():
    rng = np.random.default_rng(0)
    learned = rng.normal(size=(128, 2))
    true = 0.5 * learned + rng.normal(size=learned.shape)
    r = pearson_correlation(learned, true)
    assert 0.2 < r < 0.8
    assert pearson_correlation(3.0 * learned - 7.0, true) == pytest.approx(r)
    assert pearson_correlation(-learned, true) == pytest.approx(-r)


# ---- the shared agent part ----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "rater", "overrides"), AGENTS)
def test_learned_reward_agents_share_the_learner(pendulum, tmp_path, name, rater, overrides):
    config = load_agent_config(name, "pendulum", {**overrides, "reward_model": {"net_arch": [8]}})
    agent = make_agent(name, pendulum, config, rater=make_rater(rater, pendulum), seed=0)
    try:
        assert isinstance(agent, LearnedRewardAgent)
        # every section is parsed before the env is built; the learner is the agent's class, fed by the
        # training env's sizes, and its ensemble is the one the reward wrapper uses
        assert set(agent.sections) == set(type(agent).config_sections)
        assert type(agent.learner) is type(agent).learner_class
        inputs = agent.rm_config.inputs
        assert agent.reward_model.input_dim == feature_dim(inputs, 3, 1, pendulum.num_factors)
        assert agent.reward_env.ensemble is agent.reward_model
        assert agent.num_queries == agent.queries_asked == agent.queries_answered == 0
        metrics = agent.metrics()
        assert np.isnan(metrics["reward_corr"]) and "rm_accuracy" in metrics
        with pytest.raises(ConfigError, match=f"agent '{name}' learns its reward .* must be > 0, got 0"):
            agent.learn(128, 0)
        # the policy files and, beside them, the reward model
        agent.save(tmp_path / "policy.zip")
        assert (tmp_path / "policy.pt").is_file() and (tmp_path / "reward_model.pt").is_file()
        assert json.loads((tmp_path / "reward_model.json").read_text())["agent"] == name
    finally:
        agent.close()
