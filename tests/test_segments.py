"""Segments: collection, pair/triple sampling and validation (the step recorders are in test_rollout.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from prefrl.envs import load_env_spec
from prefrl.errors import ShapeError
from prefrl.segments import all_pairs, collect_segments, sample_pairs, sample_triples, validate_segments
from prefrl.types import SegmentBatch


@pytest.mark.parametrize(("name", "n_envs"), [("pendulum", 1), ("pendulum", 3), ("reacher", 2)])
def test_collect_shapes_and_reward_identity(name: str, n_envs: int):
    spec = load_env_spec(name)
    h = spec.segment_length
    batch = collect_segments(spec, "random", num_segments=10, seed=0, n_envs=n_envs, source=7)
    obs_dim = spec.observation_space.shape[0]
    act_dim = spec.action_space.shape[0]
    assert batch.obs.shape == (10, h, obs_dim)
    assert batch.act.shape == (10, h, act_dim)
    assert batch.reward.shape == (10, h) and batch.dones.shape == (10, h)
    assert batch.factors.shape == (10, h, spec.num_factors)
    assert batch.next_obs.shape == (10, obs_dim)
    np.testing.assert_array_equal(batch.source, 7)
    validate_segments(batch, spec)
    # recorded rewards are the env's true rewards (float32 in SB3's buffers)
    np.testing.assert_allclose(spec.reward_from_factors(batch.factors), batch.reward, rtol=1e-5, atol=1e-5)
    # random actions lie in the bounds and are not all equal
    assert np.all(batch.act >= spec.action_space.low) and np.all(batch.act <= spec.action_space.high)
    assert batch.act.std() > 0.1


def test_collect_deterministic_per_seed():
    a = collect_segments("pendulum", "random", 6, seed=3, n_envs=2)
    b = collect_segments("pendulum", "random", 6, seed=3, n_envs=2)
    c = collect_segments("pendulum", "random", 6, seed=4, n_envs=2)
    for key, value in a.to_dict().items():
        np.testing.assert_array_equal(value, b.to_dict()[key])
    assert not np.allclose(a.act, c.act)


def _episode_ids(dones: np.ndarray) -> np.ndarray:
    """Episode index of every step of one env's stream given its done flags."""
    return np.concatenate([[0], np.cumsum(dones)[:-1]])


@pytest.mark.parametrize("h", [50, 30, 1])
def test_segments_never_cross_episodes_and_next_obs_continuity(h: int):
    """Episode tails shorter than H are dropped; next_obs continues into the next segment."""
    spec = load_env_spec("pendulum")
    horizon = spec.horizon
    n = 2 * (horizon // h)  # two full episodes of one env
    batch = collect_segments(spec, "random", n, segment_length=h, seed=1)
    per_episode = horizon // h
    # a done can only be the last step of a segment
    assert not batch.dones[:, :-1].any()
    # the last segment of an episode ends with done only if H divides the horizon
    ends = batch.dones[:, -1]
    assert ends.sum() == (2 if horizon % h == 0 else 0)
    for k in range(n - 1):
        same_episode = (k + 1) % per_episode != 0
        if same_episode:
            np.testing.assert_array_equal(batch.next_obs[k], batch.obs[k + 1, 0])
        else:
            # the next segment starts a new episode: next_obs is not the reset observation
            assert not np.array_equal(batch.next_obs[k], batch.obs[k + 1, 0])
    # within a segment, consecutive observations follow the dynamics: obs[t+1] differs from obs[t]
    assert np.all(np.abs(np.diff(batch.obs, axis=1)).sum(-1) > 0)


def test_next_obs_at_episode_end_is_terminal_observation():
    """Compare the last segment of an episode with an unwrapped single-env rollout of the same seed."""
    spec = load_env_spec("reacher")  # horizon 50, H 25
    batch = collect_segments(spec, "random", 2, seed=5)
    assert batch.dones[1, -1]
    from prefrl.envs import make_env

    env = make_env(spec)
    obs, _ = env.reset(seed=5)
    np.testing.assert_allclose(batch.obs[0, 0], obs)
    for t in range(spec.horizon):
        obs, reward, terminated, truncated, _ = env.step(batch.act[t // 25, t % 25])
        assert reward == pytest.approx(batch.reward[t // 25, t % 25], rel=1e-5, abs=1e-6)
    assert truncated and not terminated
    np.testing.assert_allclose(batch.next_obs[1], obs, rtol=1e-6)


class _ConstantModel:
    """Mimics an SB3 model's predict()."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def predict(self, obs, deterministic=False):
        self.calls.append(deterministic)
        return np.full((obs.shape[0], 1), 0.5, dtype=np.float32), None


def test_collect_with_callable_and_model_policies():
    batch = collect_segments("pendulum", lambda obs: -obs[:, 2:3], 2, seed=0)
    # a damping controller: the torque opposes the angular velocity observed before the step
    np.testing.assert_allclose(batch.act[..., 0], np.clip(-batch.obs[..., 2], -2, 2), rtol=1e-6)
    model = _ConstantModel()
    batch = collect_segments("pendulum", model, 1, seed=0, deterministic=True)
    np.testing.assert_array_equal(batch.act, 0.5)
    assert all(model.calls)
    with pytest.raises(ValueError, match="unknown policy"):
        collect_segments("pendulum", "expert", 1)
    with pytest.raises(TypeError, match="policy"):
        collect_segments("pendulum", 3, 1)
    with pytest.raises(ValueError, match="segment_length"):
        collect_segments("pendulum", "random", 1, segment_length=201)
    with pytest.raises(ValueError, match="num_segments"):
        collect_segments("pendulum", "random", 0)


def test_collect_mujoco_fixed_horizon():
    spec = load_env_spec("hopper")
    batch = collect_segments(spec, "random", 20, seed=0)
    # hopper falls under random actions but is not terminated: 20 segments of 50 = one full episode
    assert batch.dones.sum() == 1 and batch.dones[-1, -1]
    assert (batch.factors[..., spec.factor_index("reward_survive")] == 0).any()


@pytest.mark.parametrize("n", [2, 3, 50])
def test_sample_pairs_distinct_uniform_deterministic(n: int):
    pairs = sample_pairs(n, 20_000, np.random.default_rng(0))
    assert pairs.shape == (20_000, 2) and pairs.dtype == np.int64
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert pairs.min() >= 0 and pairs.max() < n
    # every ordered pair (i, j), i != j, is equally likely
    counts = np.bincount(pairs[:, 0] * n + pairs[:, 1], minlength=n * n).reshape(n, n)
    expected = 20_000 / (n * (n - 1))
    off_diag = counts[~np.eye(n, dtype=bool)]
    assert np.abs(off_diag - expected).max() < 6 * np.sqrt(expected)
    np.testing.assert_array_equal(pairs, sample_pairs(n, 20_000, np.random.default_rng(0)))
    assert not np.array_equal(pairs, sample_pairs(n, 20_000, np.random.default_rng(1)))


def test_sample_pairs_allow_same_and_errors():
    pairs = sample_pairs(3, 3000, np.random.default_rng(0), allow_same=True)
    assert np.any(pairs[:, 0] == pairs[:, 1])
    assert sample_pairs(1, 5, np.random.default_rng(0), allow_same=True).tolist() == [[0, 0]] * 5
    with pytest.raises(ValueError, match="at least 2"):
        sample_pairs(1, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_pairs"):
        sample_pairs(5, -1, np.random.default_rng(0))


def test_all_pairs():
    pairs = all_pairs(5)
    assert pairs.shape == (10, 2)
    assert np.all(pairs[:, 0] < pairs[:, 1])
    assert len({tuple(p) for p in pairs}) == 10
    assert all_pairs(1).shape == (0, 2)


@pytest.mark.parametrize("n", [3, 4, 40])
def test_sample_triples(n: int):
    triples = sample_triples(n, 30_000, np.random.default_rng(0))
    assert triples.shape == (30_000, 3)
    assert np.all(triples[:, 0] != triples[:, 1])
    assert np.all(triples[:, 0] != triples[:, 2])
    assert np.all(triples[:, 1] != triples[:, 2])
    assert triples.min() >= 0 and triples.max() < n
    # each index appears equally often in every position
    for col in range(3):
        counts = np.bincount(triples[:, col], minlength=n)
        assert np.abs(counts - 30_000 / n).max() < 6 * np.sqrt(30_000 / n)
    np.testing.assert_array_equal(triples, sample_triples(n, 30_000, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="3 segments"):
        sample_triples(2, 1, np.random.default_rng(0))


def test_validate_segments_mismatch():
    batch = collect_segments("pendulum", "random", 2, segment_length=5, seed=0)
    validate_segments(batch, "pendulum")
    with pytest.raises(ShapeError, match="obs has per-step shape \\(3,\\), expected \\(17,\\)"):
        validate_segments(batch, "halfcheetah")
    fewer = SegmentBatch(**{**batch.to_dict(), "factors": batch.factors[..., :2]})
    with pytest.raises(ShapeError, match=r"factors.*angle_sq"):
        validate_segments(fewer, "pendulum")
    wide = SegmentBatch(**{**batch.to_dict(), "act": np.concatenate([batch.act, batch.act], axis=-1)})
    with pytest.raises(ShapeError, match="act has per-step shape \\(2,\\), expected \\(1,\\)"):
        validate_segments(wide, "pendulum")


def test_collect_gives_up_when_episodes_are_shorter_than_segments():
    """With early termination on, a falling hopper never completes a 200-step segment."""
    spec = load_env_spec("hopper")
    terminating = dataclasses.replace(spec, kwargs={"terminate_when_unhealthy": True})
    with pytest.raises(RuntimeError, match="shorter than the segment length"):
        collect_segments(terminating, "random", 1, segment_length=200, seed=0)
