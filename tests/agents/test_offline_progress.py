"""Offline agents (cpl, bc) show a progress bar of their gradient steps when asked, and nothing otherwise."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from prefrl.agents import make_agent
from prefrl.config import load_agent_config
from prefrl.datasets import DATASET_FORMAT, save_dataset
from prefrl.evaluation import ProgressHook
from prefrl.raters import make_rater
from prefrl.types import PreferenceBatch, SegmentBatch

TINY = {
    "policy_kwargs": {"net_arch": [16]},
    "offline": {"batch_size": 8, "dropout": 0.0},
    "eval_freq": 20,
}


@pytest.fixture
def toy_dataset(tmp_path):
    """20 random 10-step Pendulum segments in 10 labelled pairs, saved as a dataset file."""
    rng = np.random.default_rng(0)
    n, h = 20, 10
    segments = SegmentBatch(
        obs=rng.normal(size=(n, h, 3)),
        act=rng.uniform(-2, 2, size=(n, h, 1)),
        reward=np.zeros((n, h)),
        factors=np.zeros((n, h, 3)),
        dones=np.zeros((n, h), dtype=bool),
        next_obs=np.zeros((n, 3)),
    )
    pairs = np.stack([np.arange(0, n, 2), np.arange(1, n, 2)], axis=1)
    prefs = PreferenceBatch(segments, pairs, rng.integers(0, 2, size=len(pairs)).astype(float))
    meta = {"params": {"format": DATASET_FORMAT, "env": "pendulum"}}
    return save_dataset(tmp_path / "toy.npz", prefs, meta)


def _agent(name, pendulum, path, progress_bar):
    overrides = {**TINY, "dataset": {"path": str(path)}}
    if name == "cpl":
        overrides["cpl"] = {"bc_fraction": 0.5}  # half BC warm-up, half contrastive steps
    config = load_agent_config(name, "pendulum", overrides)
    agent = make_agent(name, pendulum, config, rater=make_rater("partial_return", pendulum), seed=0)
    agent.progress_bar = progress_bar
    return agent


@pytest.mark.parametrize("name", ["cpl", "bc"])
def test_progress_bar_counts_gradient_steps(name, pendulum, toy_dataset, capsys):
    agent = _agent(name, pendulum, toy_dataset, progress_bar=True)
    hook = ProgressHook(pendulum, eval_freq=20, n_eval_episodes=1, seed=0)
    try:
        agent.learn(40, 0, hook)
    finally:
        hook.close()
    err = capsys.readouterr().err
    assert f"{name} gradient steps" in err and "40/40" in err
    assert "true_return=" in err  # the latest evaluation's return


@pytest.mark.parametrize("name", ["cpl", "bc"])
def test_no_bar_means_no_output_only_a_log_record(name, pendulum, toy_dataset, capsys, caplog):
    agent = _agent(name, pendulum, toy_dataset, progress_bar=False)
    with caplog.at_level(logging.INFO, logger="prefrl.agents.offline"):
        agent.learn(40, 0)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert agent.grad_steps == 40
    assert any(f"{name}: 40 gradient steps on 10 labelled pairs" in r.getMessage() for r in caplog.records)
