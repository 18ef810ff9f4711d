"""Fixtures shared across the test suite.

pytest imports the test files with ``--import-mode=importlib`` (pyproject.toml), so test modules cannot
import one another or this file: whatever several files need is a fixture here.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from prefrl.envs import EnvSpec, load_env_spec


@pytest.fixture(scope="session", autouse=True)
def no_user_oracles() -> Iterator[None]:
    """An empty user oracle folder for the session: a developer's own trained oracles (in
    ~/.cache/prefrl/oracles) must not change what the raters and datasets of the tests load."""
    previous = os.environ.get("PREFRL_ORACLE_DIR")
    with tempfile.TemporaryDirectory(prefix="prefrl-test-oracles-") as folder:
        os.environ["PREFRL_ORACLE_DIR"] = folder
        yield
    if previous is None:
        os.environ.pop("PREFRL_ORACLE_DIR", None)
    else:
        os.environ["PREFRL_ORACLE_DIR"] = previous


@pytest.fixture(scope="session")
def pendulum() -> EnvSpec:
    """The Pendulum env spec (a frozen dataclass: one for the whole session)."""
    return load_env_spec("pendulum")


@pytest.fixture(scope="session")
def tiny_ppo() -> Iterator[dict]:
    """A tiny PPO config for Pendulum (2 envs x 64 steps per rollout, [16] net, 2 epochs): a run of a few
    hundred steps takes well under a second. Shared by the whole session: copy it before changing it."""
    config = {"n_envs": 2, "policy_kwargs": {"net_arch": [16]}, "ppo": {"n_steps": 64, "n_epochs": 2}}
    original = copy.deepcopy(config)
    yield config
    assert config == original, "a test changed the shared tiny_ppo config in place"


@pytest.fixture(scope="session")
def random_pairs() -> Callable[..., np.ndarray]:
    """``random_pairs(n, m, seed=1)``: ``m`` random index pairs over ``n`` segments, never (i, i)."""

    def random_pairs(n: int, m: int, seed: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        first = rng.integers(n, size=m)
        return np.stack([first, (first + 1 + rng.integers(n - 1, size=m)) % n], axis=1)

    return random_pairs


@pytest.fixture(scope="session")
def flat_params() -> Callable[..., torch.Tensor]:
    """``flat_params(agent)``: an SB3-based agent's policy parameters as one flat tensor."""

    def flat_params(agent) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in agent.model.policy.parameters()])

    return flat_params
