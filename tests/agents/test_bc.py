"""BC on offline preference data: which segments are cloned, that it clones them, and a tiny run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prefrl.agents.bc import BCAgent, cloned_segments
from prefrl.config import load_agent_config
from prefrl.datasets import DATASET_FORMAT, save_dataset
from prefrl.experiment import run_experiment
from prefrl.raters import make_rater
from prefrl.types import PreferenceBatch, SegmentBatch

TINY = {
    "policy_kwargs": {"net_arch": [32, 32]},
    "offline": {"batch_size": 16, "learning_rate": 1e-3, "dropout": 0.0},
    "dataset": {"episodes": 6, "segment": 50, "pairs": "sparse", "return_episodes": 0},
}


def test_cloned_segments():
    pairs = np.array([[0, 1], [2, 0], [3, 4], [0, 4]])
    labels = np.array([1.0, 0.0, 0.5, 0.7])
    # winners: 0 (pair 1), 0 (pair 2), 3 and 4 (tie), 0 (soft label 0.7 > 0.5)
    assert sorted(cloned_segments(pairs, labels).tolist()) == [0, 0, 0, 3, 4]
    assert cloned_segments(pairs, labels, "all").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="preferred' or 'all'"):
        cloned_segments(pairs, labels, "best")


@pytest.mark.parametrize("data, expected_sign", [("preferred", 1.0), ("all", 0.0)])
def test_bc_clones_the_preferred_actions(pendulum, tmp_path, data, expected_sign):
    # preferred segments act +1.0, the others -1.0, in the same states: BC on the winners learns +1.0,
    # BC on everything learns the average 0.0
    rng = np.random.default_rng(0)
    n, h = 40, 10
    obs = rng.normal(size=(n // 2, h, 3)).repeat(2, axis=0)
    act = np.tile([[1.0], [-1.0]], (n // 2, 1))[:, None, :].repeat(h, axis=1)
    segs = SegmentBatch(
        obs=obs,
        act=act,
        reward=np.zeros((n, h)),
        factors=np.zeros((n, h, 3)),
        dones=np.zeros((n, h), dtype=bool),
        next_obs=np.zeros((n, 3)),
    )
    pairs = np.stack([np.arange(0, n, 2), np.arange(1, n, 2)], axis=1)
    flip = rng.random(len(pairs)) < 0.5  # the winner is segment 1 or 2 at random
    pairs[flip] = pairs[flip, ::-1]
    prefs = PreferenceBatch(segs, pairs, np.where(flip, 0.0, 1.0))
    path = save_dataset(
        tmp_path / "toy.npz", prefs, {"params": {"format": DATASET_FORMAT, "env": "pendulum"}}
    )
    overrides = {**TINY, "bc": {"data": data}, "dataset": {"path": str(path)}}
    config = load_agent_config("bc", "pendulum", overrides)
    agent = BCAgent(pendulum, config, rater=make_rater("oracle"), seed=0)
    agent.learn(300, 0)
    actions = agent.predict(obs.reshape(-1, 3))  # env units (bounds [-2, 2])
    assert np.mean(actions) == pytest.approx(expected_sign, abs=0.1)
    assert agent.num_queries == len(pairs)


def test_tiny_run_through_run_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFRL_DATA_DIR", str(tmp_path / "data"))
    run_dir = run_experiment(
        "pendulum", "bc", "partial_return", 1, steps=200, out=tmp_path / "run", overrides=TINY,
        eval_freq=100, n_eval_episodes=2, progress_bar=False,
    )  # fmt: skip
    table = pd.read_csv(run_dir / "progress.csv")
    assert table["grad_steps"].tolist() == [0, 100, 200]
    assert (table["labelled_pairs"] == 12).all() and (table["env_steps"] == 1200).all()
    assert table["train/bc_loss"].iloc[1:].notna().all() and table["true_return_mean"].notna().all()
    assert (run_dir / "done").is_file()
