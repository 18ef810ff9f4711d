"""Segments: collection, the trajectory recorder, pair/triple sampling and validation."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize

from prefrl.envs import load_env_spec, make_vec_env
from prefrl.errors import ShapeError
from prefrl.rollout import RolloutRecorder, StepRecorder, TrajectoryRecorder, cut_trajectories
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


def test_recorder_matches_collect_and_keeps_partials():
    spec = load_env_spec("pendulum")
    h, n_envs, seed = 40, 2, 11
    expected = collect_segments(spec, "random", 14, segment_length=h, seed=seed, n_envs=n_envs)

    recorder = TrajectoryRecorder(make_vec_env(spec, n_envs=n_envs, seed=seed), h, source=0)
    rng = np.random.default_rng(seed)
    low, high = spec.action_space.low, spec.action_space.high
    # the same actions as collect_segments' random policy (drawn in blocks of 1024 steps)
    actions = rng.uniform(low, high, size=(1024, n_envs, 1)).astype(np.float32)
    recorder.reset()
    assert recorder.pop_segments() is None
    popped = []
    for t in range(300):
        recorder.source = t
        recorder.step(actions[t])
        if t == 100:
            # 101 steps: 2 complete segments per env (80 steps), 21 steps pending
            first = recorder.pop_segments()
            assert first is not None and len(first) == 4
            np.testing.assert_array_equal(first.source, [39, 39, 79, 79])
            popped.append(first)
    # by step 300 each env has 5 segments of its first episode and 2 of its second (20 steps pending)
    assert recorder.num_pending == 14 - 4
    popped.append(recorder.pop_segments())
    got = SegmentBatch.concatenate(popped)
    assert recorder.pop_segments() is None
    for key in ("obs", "act", "reward", "factors", "dones", "next_obs"):
        np.testing.assert_array_equal(getattr(got, key), getattr(expected, key), err_msg=key)


def test_recorder_records_clipped_actions_and_true_reward_below_reward_wrapper():
    class ZeroReward(VecEnvWrapper):
        """Stands in for a learned-reward wrapper above the recorder."""

        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            return obs, np.zeros_like(rewards), dones, infos

    spec = load_env_spec("pendulum")
    recorder = TrajectoryRecorder(make_vec_env(spec, n_envs=1, seed=0), 10)
    venv = ZeroReward(recorder)
    venv.reset()
    for _ in range(10):
        _, rewards, _, _ = venv.step(np.full((1, 1), 5.0, dtype=np.float32))
        assert rewards[0] == 0.0
    batch = recorder.pop_segments()
    assert batch is not None
    np.testing.assert_array_equal(batch.act, 2.0)  # clipped to max torque
    assert np.all(batch.reward < 0)  # pendulum costs: the true reward, not the wrapper's zeros
    np.testing.assert_allclose(batch.factors[..., 2], 4.0)


def test_recorder_rejects_wrapped_venv_and_bad_length():
    venv = VecNormalize(make_vec_env("pendulum", n_envs=1, seed=0))
    with pytest.raises(ValueError, match="directly"):
        TrajectoryRecorder(venv, 10)
    TrajectoryRecorder(venv, 10, allow_wrapped=True)
    with pytest.raises(ValueError, match="segment_length"):
        TrajectoryRecorder(make_vec_env("pendulum"), 0)
    recorder = TrajectoryRecorder(make_vec_env("pendulum"), 5)
    with pytest.raises(RuntimeError, match="reset"):
        recorder.step(np.zeros((1, 1)))


def test_recorder_long_run_compacts_buffer():
    """More steps than the buffer capacity: segments stay contiguous across the compaction."""
    spec = load_env_spec("pendulum")
    h = 7  # 200 % 7 != 0: episode tails are dropped and segment starts drift against the buffer
    recorder = TrajectoryRecorder(make_vec_env(spec, n_envs=2, seed=2), h)
    recorder.reset()
    for _ in range(1000):
        recorder.step(np.zeros((2, 1), dtype=np.float32))
    batch = recorder.pop_segments()
    assert batch is not None
    assert len(batch) == 2 * 5 * (200 // h)
    same_episode = np.array([(k // 2 + 1) % (200 // h) != 0 for k in range(len(batch))])
    # segments alternate env 0, env 1; within an episode each continues the previous one of its env
    for k in np.flatnonzero(same_episode[:-2]):
        np.testing.assert_array_equal(batch.next_obs[k], batch.obs[k + 2, 0])


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


def test_recorder_under_sb3_ppo_and_model_policy():
    """The recorder works as PPO's env, and a trained SB3 model can drive collect_segments."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    recorder = TrajectoryRecorder(make_vec_env("pendulum", n_envs=2, seed=0), 50)
    model = PPO(
        "MlpPolicy",
        recorder,
        n_steps=100,
        batch_size=100,
        n_epochs=1,
        seed=0,
        policy_kwargs={"net_arch": [16]},
    )
    recorder.source = 123
    model.learn(200)
    batch = recorder.pop_segments()
    assert batch is not None and len(batch) == 4  # 200 steps = 2 envs x 100 steps, H = 50
    np.testing.assert_array_equal(batch.source, 123)
    assert np.all(np.abs(batch.act) <= 2.0)
    segments = collect_segments("pendulum", model, 2, seed=0, deterministic=True)
    validate_segments(segments, "pendulum")


def test_collect_gives_up_when_episodes_are_shorter_than_segments():
    """With early termination on, a falling hopper never completes a 200-step segment."""
    spec = load_env_spec("hopper")
    terminating = dataclasses.replace(spec, kwargs={"terminate_when_unhealthy": True})
    with pytest.raises(RuntimeError, match="shorter than the segment length"):
        collect_segments(terminating, "random", 1, segment_length=200, seed=0)


# ---- the shared step bookkeeping of TrajectoryRecorder and RolloutRecorder -------------------------
class CountingEnv(gym.Env):
    """``obs = (episode, t)``: all observations differ, so a terminal one cannot pass for a reset one."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, factors: bool = True) -> None:
        self.factors, self.episode, self.t = factors, -1, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.array([self.episode, self.t], np.float32), {}

    def step(self, action):
        self.t += 1
        info = {"factors": np.array([self.t, action[0]])} if self.factors else {}
        return np.array([self.episode, self.t], np.float32), self.t + float(action[0]), False, False, info


def counting_venv(n_envs: int = 2, horizon: int = 6, factors: bool = True) -> DummyVecEnv:
    return DummyVecEnv(
        [lambda: gym.wrappers.TimeLimit(CountingEnv(factors), max_episode_steps=horizon)] * n_envs
    )


def test_both_recorders_record_the_same_transitions_and_terminal_next_obs():
    h, steps = 3, 12  # H divides the horizon 6: every trajectory of the rollout is a complete segment
    traj, roll = TrajectoryRecorder(counting_venv(), h), RolloutRecorder(counting_venv(), hide_reward=False)
    assert isinstance(traj, StepRecorder) and isinstance(roll, StepRecorder)
    np.testing.assert_array_equal(traj.reset(), roll.reset())
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, 2, 1)).astype(np.float32)
    for t in range(steps):
        obs, rewards, dones, _ = traj.step(actions[t])
        # what passes upwards is untouched: the reset observation at an episode end
        np.testing.assert_array_equal(obs, [[(t + 1) // 6, (t + 1) % 6]] * 2)
        for got, expected in zip(roll.step(actions[t])[:3], (obs, rewards, dones), strict=True):
            np.testing.assert_array_equal(got, expected)
    segments = traj.pop_segments()
    assert segments is not None
    from_rollout = cut_trajectories(roll.pop(steps), h)
    for key in ("obs", "act", "reward", "factors", "dones", "next_obs"):
        got, expected = getattr(segments, key), getattr(from_rollout, key)
        assert got.dtype == expected.dtype, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
    # segment k * 2 + e is steps [3k, 3k + 3) of env e: odd k end an episode at its terminal observation,
    # and the next segment starts from the reset observation
    np.testing.assert_array_equal(segments.next_obs[::2], [[0, 3], [0, 6], [1, 3], [1, 6]])
    np.testing.assert_array_equal(segments.obs[::2, 0], [[0, 0], [0, 3], [1, 0], [1, 3]])
    np.testing.assert_array_equal(segments.dones[:, -1], [False, False, True, True] * 2)
    np.testing.assert_allclose(
        segments.factors[..., 0], np.tile([1, 2, 3], (8, 1)) + [[0], [0], [3], [3]] * 2
    )


def test_recorders_without_factors_and_before_reset():
    # RolloutRecorder records F = 0 factors; TrajectoryRecorder hands out segments for factor-based raters
    roll = RolloutRecorder(counting_venv(factors=False))
    roll.reset()
    roll.step(np.zeros((2, 1), np.float32))
    assert roll.pop(1).factors.shape == (1, 2, 0)
    traj = TrajectoryRecorder(counting_venv(factors=False), 3)
    traj.reset()
    with pytest.raises(KeyError, match="factors"):
        traj.step(np.zeros((2, 1), np.float32))
    for wrap in (lambda venv: TrajectoryRecorder(venv, 3), RolloutRecorder):
        venv = counting_venv()
        venv.reset()  # the envs can step, but the recorder has no observation to start from
        recorder = wrap(venv)
        with pytest.raises(RuntimeError, match=rf"{type(recorder).__name__}: call reset\(\) before step"):
            recorder.step(np.zeros((2, 1), np.float32))
