"""heron: budgeted segment pairs by default, HERON's unbudgeted state pairs in minibatches, bad configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prefrl.agents import make_agent
from prefrl.agents.heron import HeronAgent
from prefrl.config import load_agent_config
from prefrl.envs import load_env_spec
from prefrl.errors import SpecError
from prefrl.experiment import run_experiment
from prefrl.raters import make_rater
from prefrl.segments import collect_segments

TINY = {
    "n_envs": 2,
    "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2},
    "reward_model": {"net_arch": [16], "initial_epochs": 2, "max_train_pairs": 512},
}


def make_heron(overrides: dict | None = None, rater: str = "hierarchical") -> HeronAgent:
    spec = load_env_spec("pendulum")
    config = load_agent_config("heron", "pendulum", {**TINY, **(overrides or {})})
    agent = make_agent("heron", spec, config, rater=make_rater(rater, spec), seed=0)
    assert isinstance(agent, HeronAgent)
    return agent


def test_defaults_follow_heron() -> None:
    agent = make_heron()
    assert agent.heron.pairing == "segment" and agent.segment_length == agent.env_spec.segment_length
    assert agent.reward_model.inputs == "obs_factors"
    assert agent.reward_model.num_members == 1
    agent.close()
    assert make_heron({"heron": {"pairing": "state"}}).segment_length == 1


def _state_pairs(agent: HeronAgent, pool, quota: int = 10):
    """HERON's state pairing on ``pool`` (the latest rollout); ``quota`` is ignored: it is unbudgeted."""
    agent.query_pool.add(pool)
    return agent.collect_preferences(quota)


@pytest.mark.parametrize("quota", [10_000, 50])
def test_state_pairs_stay_inside_minibatches(quota: int) -> None:
    agent = make_heron({"heron": {"pair_batch_size": 32, "pairing": "state"}})
    pool = collect_segments("pendulum", "random", 300, segment_length=1, seed=1)
    prefs = _state_pairs(agent, pool, quota)
    assert prefs is not None and len(prefs) == 300  # every state starts exactly one pair
    assert np.all(prefs.pairs[:, 0] != prefs.pairs[:, 1])
    np.testing.assert_array_equal(np.sort(prefs.pairs[:, 0]), np.arange(300))
    # the labels agree with the top-ranked factor whenever it differs by a wide margin
    angle = pool.factors[:, 0, agent.env_spec.factor_index("angle_sq")]
    diff = angle[prefs.pairs[:, 0]] - angle[prefs.pairs[:, 1]]
    # a minibatch's margin is 0.1 * its std <= 0.1 * range: a difference of a quarter of the range decides
    clear = np.abs(diff) > 0.25 * np.ptp(angle)
    assert clear.any()
    np.testing.assert_array_equal(prefs.labels[clear], (diff[clear] < 0).astype(float))  # a cost
    assert agent.rater.num_queries == 300 == agent.queries_asked == agent.queries_answered
    agent.close()


def test_minibatch_margin_matches_rater_on_the_minibatch() -> None:
    # one minibatch holding the whole pool: labels equal the rater's labels on that pool
    agent = make_heron({"heron": {"pair_batch_size": 1000, "pairing": "state"}})
    pool = collect_segments("pendulum", "random", 120, segment_length=1, seed=2)
    prefs = _state_pairs(agent, pool)
    reference = make_rater("hierarchical", agent.env_spec).label(pool, prefs.pairs, np.random.default_rng(0))
    np.testing.assert_array_equal(prefs.labels, reference.labels)
    agent.close()


@pytest.mark.parametrize("pairing", ["state", "segment"])
def test_tiny_run_completes(tmp_path: Path, pairing: str) -> None:
    run_dir = run_experiment(
        "pendulum",
        "heron",
        "hierarchical",
        seed=0,
        steps=768,
        queries=2000,
        out=tmp_path / pairing,
        overrides={**TINY, "heron": {"pairing": pairing}},
        eval_freq=384,
        n_eval_episodes=1,
        progress_bar=False,
    )
    progress = pd.read_csv(run_dir / "progress.csv")
    assert {"queries", "rm_accuracy", "reward_corr", "rm_loss"} <= set(progress.columns)
    last = progress.iloc[-1]
    assert last["rm_pairs"] == last["queries_answered"] == last["queries_asked"]
    if pairing == "state":
        # unbudgeted (HERON's code): every state of the 3 rollouts (768) is paired, whatever --queries says
        assert last["queries"] == 768 and last["unbudgeted"] == 1
    else:
        # the budget, spent on the constant schedule, as rm_ppo's
        assert last["queries"] <= 2000 and last["unbudgeted"] == 0


def test_dropped_ties_are_not_counted(tmp_path: Path) -> None:
    agent = make_heron({"heron": {"pairing": "state"}}, rater="hierarchical:drop_ties=true")
    pool = collect_segments("pendulum", "random", 200, segment_length=1, seed=3)
    prefs = _state_pairs(agent, pool)
    assert prefs is not None and len(prefs) == agent.queries_answered < agent.queries_asked == 200
    assert np.all(prefs.labels != 0.5)
    agent.close()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"heron": {"pairing": "states"}}, "did you mean 'state'"),
        ({"heron": {"pair_batch_size": 1}}, "pair_batch_size"),
        ({"heron": {"pair_size": 64}}, "did you mean 'pair_batch_size'"),
    ],
)
def test_bad_configs_fail_clearly(overrides: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        make_heron(overrides)
