"""Rollout plumbing under the agents: the step recorders, the learned-reward VecEnv wrapper, trajectory
cutting and the relabelling rollout buffer (no env reward may reach PPO)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize

from prefrl.envs import load_env_spec, make_vec_env
from prefrl.errors import SpecError
from prefrl.reward_model import RewardEnsemble, feature_dim, reward_features
from prefrl.rollout import (
    LearnedRewardVecEnvWrapper,
    RecordedRollout,
    RelabelRolloutBuffer,
    RolloutRecorder,
    StepRecorder,
    TrajectoryRecorder,
    cut_trajectories,
    spread_over_steps,
)
from prefrl.segments import collect_segments, validate_segments
from prefrl.types import SegmentBatch


# ---- TrajectoryRecorder ---------------------------------------------------------------------------
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


# ---- trajectory cutting ------------------------------------------------------------------------------
def test_cut_trajectories_and_spread_round_trip() -> None:
    t, e, h = 12, 3, 4
    step_id = np.arange(t * e, dtype=np.float64).reshape(t, e)  # value = t * e + env
    rollout = RecordedRollout(
        obs=step_id[..., None],
        act=step_id[..., None],
        reward=step_id,
        factors=np.stack([step_id, -step_id], axis=-1),
        dones=np.zeros((t, e), dtype=bool),
        next_obs=(step_id + 0.5)[..., None],
    )
    batch = cut_trajectories(rollout, h, source=7)
    assert batch.num_segments == t // h * e and batch.length == h
    for k in range(t // h):
        for env in range(e):
            seg = batch[k * e + env]
            np.testing.assert_array_equal(seg.reward[0], step_id[k * h : (k + 1) * h, env])
            np.testing.assert_array_equal(seg.next_obs[0], [step_id[(k + 1) * h - 1, env] + 0.5])
    assert np.all(batch.source == 7)
    values = np.arange(batch.num_segments, dtype=np.float64)
    per_step = spread_over_steps(values, t, e, h)
    # summing each trajectory's steps gives its value back
    back = RecordedRollout(
        obs=rollout.obs, act=rollout.act, reward=per_step, factors=rollout.factors,
        dones=rollout.dones, next_obs=rollout.next_obs,
    )  # fmt: skip
    np.testing.assert_allclose(cut_trajectories(back, h).returns, values)


def test_cut_trajectories_rejects_misaligned_rollout() -> None:
    rollout = RecordedRollout(
        obs=np.zeros((10, 1, 1)), act=np.zeros((10, 1, 1)), reward=np.zeros((10, 1)),
        factors=np.zeros((10, 1, 0)), dones=np.zeros((10, 1), dtype=bool), next_obs=np.zeros((10, 1, 1)),
    )  # fmt: skip
    with pytest.raises(ValueError, match="multiple of the trajectory length"):
        cut_trajectories(rollout, 4)


# ---- the buffer relabelling: no env reward reaches PPO ----------------------------------------------
class HugeRewardEnv(gym.Env):
    """A 1-d random walk whose reward is a huge noisy constant (any leak into PPO would dominate)."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x = self.np_random.normal(size=2).astype(np.float32)
        return self.x, {}

    def step(self, action):
        self.x = np.clip(self.x + 0.1 * float(action[0]), -10, 10).astype(np.float32)
        reward = 1e6 + 1e5 * self.np_random.normal()
        return self.x, reward, False, False, {"factors": np.array([float(action[0])])}


def gae_reference(rewards, values, starts, last_values, last_dones, gamma, lam) -> np.ndarray:
    """Plain-loop GAE returns (independent of SB3's code path)."""
    t = rewards.shape[0]
    adv = np.zeros_like(rewards)
    last = 0.0
    for step in reversed(range(t)):
        if step == t - 1:
            nonterminal, next_v = 1.0 - last_dones, last_values
        else:
            nonterminal, next_v = 1.0 - starts[step + 1], values[step + 1]
        delta = rewards[step] + gamma * next_v * nonterminal - values[step]
        last = delta + gamma * lam * nonterminal * last
        adv[step] = last
    return adv + values


@pytest.mark.parametrize("keep_bootstrap", [True, False])
def test_buffer_rewards_and_returns_come_from_the_hook_only(keep_bootstrap: bool) -> None:
    n_envs, n_steps, horizon = 2, 40, 10
    venv = DummyVecEnv(
        [lambda: gym.wrappers.TimeLimit(HugeRewardEnv(), max_episode_steps=horizon) for _ in range(n_envs)]
    )
    recorder = RolloutRecorder(venv)
    seen: dict[str, np.ndarray] = {}

    def hook(buffer: RelabelRolloutBuffer) -> np.ndarray:
        rollout = recorder.pop(buffer.buffer_size)
        seen["true"] = rollout.reward
        seen["obs"] = rollout.obs
        seen["values"] = buffer.values.copy()
        seen["stored"] = buffer.rewards.copy()
        return (rollout.obs[..., 0] > 0).astype(np.float32) / 5  # any reward computed from the record

    model = PPO(
        "MlpPolicy", recorder, n_steps=n_steps, batch_size=40, n_epochs=1, seed=0, gamma=0.9,
        rollout_buffer_class=RelabelRolloutBuffer,
        rollout_buffer_kwargs={"relabel_hook": hook, "keep_bootstrap": keep_bootstrap},
        policy_kwargs={"net_arch": [8]},
    )  # fmt: skip
    # stop right after the first rollout's advantages are computed (before the update)
    from stable_baselines3.common.callbacks import BaseCallback

    class Grab(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            buf = self.model.rollout_buffer
            seen["rewards"], seen["returns"] = buf.rewards.copy(), buf.returns.copy()
            seen["starts"], seen["dones"] = buf.episode_starts.copy(), self.locals["dones"].copy()
            seen["last_values"] = self.locals["values"].numpy().ravel()

    model.learn(n_steps * n_envs, callback=Grab())
    assert np.all(seen["true"] > 1e5)  # the recorder saw the real, huge reward...
    bootstrap = seen["stored"]
    truncated = np.zeros((n_steps, n_envs), dtype=bool)
    truncated[horizon - 1 :: horizon] = True
    # ...but SB3 stored only the timeout bootstrap gamma * V(terminal_obs): zero on every other step
    assert np.all(bootstrap[~truncated] == 0.0)
    assert np.all(np.abs(bootstrap) < 100.0)
    expected = (seen["obs"][..., 0] > 0) / 5 + (bootstrap if keep_bootstrap else 0.0)
    np.testing.assert_allclose(seen["rewards"], expected, rtol=1e-6, atol=1e-6)
    ref = gae_reference(
        expected, seen["values"], seen["starts"], seen["last_values"], seen["dones"], 0.9, 0.95
    )
    np.testing.assert_allclose(seen["returns"], ref, rtol=1e-4, atol=1e-4)
    assert np.abs(seen["returns"]).max() < 100.0


def test_buffer_without_hook_refuses_to_compute_advantages() -> None:
    venv = DummyVecEnv([lambda: gym.wrappers.TimeLimit(HugeRewardEnv(), max_episode_steps=8)])
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, rollout_buffer_class=RelabelRolloutBuffer)
    with pytest.raises(RuntimeError, match="no relabel_hook"):
        model.learn(16)


# ---- the learned-reward wrapper ---------------------------------------------------------------------
@pytest.mark.parametrize("inputs", ["obs_act", "obs_factors"])
def test_wrapper_keeps_true_reward_and_substitutes_normalised_learned_reward(inputs: str) -> None:
    spec = load_env_spec("pendulum")
    n_envs, steps = 2, 300
    dim = feature_dim(inputs, 3, 1, spec.num_factors)
    ensemble = RewardEnsemble(inputs, dim, num_members=2, net_arch=[16], seed=3)
    wrapped = LearnedRewardVecEnvWrapper(make_vec_env(spec, n_envs=n_envs, seed=5), ensemble)
    reference = make_vec_env(spec, n_envs=n_envs, seed=5)  # same seed and actions: same true rewards
    rng = np.random.default_rng(0)
    obs = wrapped.reset()
    reference.reset()
    returned, raw = [], []
    for _ in range(steps):
        actions = rng.uniform(-2, 2, size=(n_envs, 1)).astype(np.float32)
        prev_obs = obs
        obs, rewards, _, infos = wrapped.step(actions)
        _, ref_rewards, _, ref_infos = reference.step(actions)
        np.testing.assert_allclose([i["true_reward"] for i in infos], ref_rewards, rtol=1e-6)
        factors = np.stack([i["factors"] for i in ref_infos])
        expected_feats = reward_features(inputs, prev_obs, actions, factors)
        learned = ensemble.predict_mean(expected_feats)
        np.testing.assert_allclose([i["learned_reward"] for i in infos], learned, rtol=1e-5, atol=1e-6)
        # substituted reward = learned reward normalised by the running statistics (this step included)
        np.testing.assert_allclose(rewards, wrapped.normalize_reward(learned), rtol=1e-5, atol=1e-6)
        returned.append(rewards)
        raw.append(learned)
    returned, raw = np.array(returned), np.array(raw)
    np.testing.assert_allclose(wrapped.reward_rms.mean, raw.mean(), rtol=1e-3, atol=1e-6)
    late = returned[steps // 2 :]
    assert abs(late.mean()) < 0.5 and 0.5 < late.std() < 1.5
    log = wrapped.rollout_log()
    assert log.features.shape == (steps, n_envs, dim)
    np.testing.assert_allclose(log.rewards, returned)
    assert log.true_rewards.shape == (steps, n_envs)
    wrapped.clear_log()
    assert wrapped.num_logged == 0
    wrapped.reset_normalization(np.array([1.0, 3.0]))
    np.testing.assert_allclose(wrapped.normalize_reward(np.array([2.0])), [0.0], atol=1e-3)


@pytest.mark.parametrize("inputs", ["obs_act", "obs_factors"])
def test_deferred_wrapper_returns_zeros_and_logs_the_same_features(inputs: str) -> None:
    spec = load_env_spec("pendulum")
    n_envs, steps = 3, 50
    dim = feature_dim(inputs, 3, 1, spec.num_factors)
    ensemble = RewardEnsemble(inputs, dim, num_members=2, net_arch=[16], seed=3)
    eager = LearnedRewardVecEnvWrapper(make_vec_env(spec, n_envs=n_envs, seed=5), ensemble)
    deferred = LearnedRewardVecEnvWrapper(make_vec_env(spec, n_envs=n_envs, seed=5), ensemble, deferred=True)
    eager.reset()
    deferred.reset()
    rng = np.random.default_rng(1)
    eager_learned = []
    for _ in range(steps):
        actions = rng.uniform(-3, 3, size=(n_envs, 1)).astype(np.float32)  # outside the Box: clipped
        _, _, _, eager_infos = eager.step(actions)
        eager_learned.append([i["learned_reward"] for i in eager_infos])
        _, rewards, _, infos = deferred.step(actions)
        assert not rewards.any() and "learned_reward" not in infos[0]
        true_rewards = [i["true_reward"] for i in infos]
        np.testing.assert_array_equal(true_rewards, [i["true_reward"] for i in eager_infos])
    eager_log, log = eager.rollout_log(), deferred.rollout_log(last=steps)
    np.testing.assert_array_equal(log.features, eager_log.features)
    np.testing.assert_array_equal(log.true_rewards, eager_log.true_rewards)
    assert log.rewards.shape == (steps, n_envs) and not log.rewards.any()
    # the batched rewards of the whole rollout are what the eager wrapper predicted step by step
    learned = ensemble.predict_mean(log.features)
    np.testing.assert_allclose(learned, eager_learned, rtol=1e-5, atol=1e-6)
    deferred.observe_rewards(ensemble.predict_mean(log.features))
    assert deferred.reward_rms.count > steps * n_envs - 1


def test_deferred_wrapper_rejects_a_model_for_another_env_at_the_first_step() -> None:
    spec = load_env_spec("pendulum")
    ensemble = RewardEnsemble("obs_act", 7, num_members=1, net_arch=[8], seed=0)
    wrapped = LearnedRewardVecEnvWrapper(make_vec_env(spec, n_envs=1, seed=0), ensemble, deferred=True)
    wrapped.reset()
    with pytest.raises(SpecError, match="takes 7 inputs per step, the env gives 4"):
        wrapped.step(np.zeros((1, 1), dtype=np.float32))
