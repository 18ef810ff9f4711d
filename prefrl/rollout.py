"""The SB3 rollout plumbing every online agent shares: step recorders, reward substitution, relabelling.

Data flow of one online training rollout (base VecEnv at the bottom, the learner on top)::

    make_vec_env -> TrajectoryRecorder / RolloutRecorder -> LearnedRewardVecEnvWrapper -> VecNormalize -> PPO
                                                                                   RelabelRolloutBuffer <-'

* :class:`StepRecorder` - base class of VecEnv wrappers that see every transition (observation before the
  step, action, reward, reward factors, done, next observation). Its three subclasses:

  - :class:`TrajectoryRecorder` cuts each env's stream into segments of ``H`` steps (rm_ppo, heron, and
    :func:`prefrl.segments.collect_segments`);
  - :class:`RolloutRecorder` keeps the whole rollout and can hide the env reward from the learner (spo);
  - :class:`LearnedRewardVecEnvWrapper` substitutes a learned reward for the env reward, keeping the true
    one in ``info["true_reward"]`` (rm_ppo, heron).

* :class:`RelabelRolloutBuffer` - an SB3 rollout buffer that asks a hook for the rewards of a finished
  rollout before it computes returns and advantages (rm_ppo relabels with a refitted model; spo writes
  win rates).
* :func:`cut_trajectories` / :func:`spread_over_steps` - a recorded rollout ``[T, n_envs]`` <-> ``N``
  trajectories of ``H`` steps. Trajectory ``n = k * n_envs + e`` holds steps ``[k * H, (k + 1) * H)`` of
  env ``e``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from prefrl.errors import SpecError
from prefrl.reward_model import RewardEnsemble, reward_features
from prefrl.types import SegmentBatch

__all__ = [
    "LearnedRewardVecEnvWrapper",
    "RecordedRollout",
    "RelabelHook",
    "RelabelRolloutBuffer",
    "RolloutLog",
    "RolloutRecorder",
    "StepRecorder",
    "TrajectoryRecorder",
    "cut_trajectories",
    "spread_over_steps",
]

#: ``hook(buffer) -> rewards [buffer_size, n_envs]`` supplying the rewards a rollout is trained on
RelabelHook = Callable[["RelabelRolloutBuffer"], np.ndarray]


# ---------------------------------------------------------------------------------------------------
# Step recorders
# ---------------------------------------------------------------------------------------------------
class StepRecorder(VecEnvWrapper):
    """Base class of VecEnv wrappers that record every transition of the VecEnv they wrap.

    It keeps the observation each step starts from and the actions sent down, and after each step hands
    the whole transition to :meth:`_record`. SB3's VecEnvs reset an env as soon as its episode ends, so
    the observation they return at a done is already the next episode's first one: the recorded
    ``next_obs`` is ``info["terminal_observation"]`` there, while the next step starts from the reset
    observation. What passes upwards is not changed.

    Subclasses implement :meth:`_record`, and extend :meth:`reset` (calling ``super().reset()``) to drop
    what they hold when new episodes start.

    :param venv: the VecEnv to wrap.
    """

    #: raise ``KeyError`` at a step whose info lacks ``"factors"``, instead of recording ``F = 0`` factors
    require_factors: ClassVar[bool] = False

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self._last_obs = np.array(obs)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        # not copied: subclasses copy what they keep when the step completes (as DummyVecEnv, which reads
        # the actions only in step_wait)
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, dones, infos = self.venv.step_wait()
        if self._last_obs is None or self._actions is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() before step()")
        done = np.asarray(dones, dtype=bool)
        if self.require_factors:
            factors = np.array([info["factors"] for info in infos], dtype=np.float64)
        else:
            factors = np.array([info.get("factors", ()) for info in infos], dtype=np.float64)
        last_obs = next_obs = np.array(obs)
        ended = done.nonzero()[0]  # cheaper than done.any() on the hot path
        if ended.size:
            next_obs = last_obs.copy()  # last_obs must keep the reset observations
            for i in ended:
                terminal = infos[i].get("terminal_observation")
                if terminal is not None:
                    next_obs[i] = terminal
        self._record(self._last_obs, self._actions, np.asarray(rewards), factors, done, next_obs, infos)
        # subclasses may keep the arrays they were given: they are never written to afterwards
        self._last_obs = last_obs
        return obs, rewards, dones, infos

    @abstractmethod
    def _record(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        factors: np.ndarray,
        dones: np.ndarray,
        next_obs: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Record one step of all envs.

        Write into none of the arguments, and copy what must outlive the step: ``next_obs`` may be the
        next step's ``obs``, and ``actions`` is the caller's array.

        :param obs: observation the step started from, ``[n_envs, *obs_shape]``.
        :param actions: the actions as passed to :meth:`step_async` (not copied, clipped or reshaped).
        :param rewards: the wrapped VecEnv's rewards, ``[n_envs]``.
        :param factors: ``info["factors"]`` stacked as float64, ``[n_envs, F]`` (``F = 0`` if absent and
            :attr:`require_factors` is off).
        :param dones: episode ended at this step, ``[n_envs]`` bool.
        :param next_obs: observation after the step, the terminal one where ``dones``.
        :param infos: the step's infos.
        """


class TrajectoryRecorder(StepRecorder):
    """Records the base VecEnv's transitions and cuts them into segments of ``segment_length`` steps.

    Per env it records the observation before each step, the action as the env received it (clipped to
    the action space's bounds), the TRUE reward, the reward factors (``info["factors"]``, see
    :class:`~prefrl.envs.RewardFactorWrapper`) and the done flags. ``next_obs`` of a segment is the
    observation after its last step (``info["terminal_observation"]`` when the episode ended there).

    It must wrap the base VecEnv directly, so that wrappers above it (a learned-reward wrapper,
    normalisation) do not change what it records. Segments are tagged with :attr:`source` (an int the
    caller sets, e.g. the training step or checkpoint id) as it was when the segment was completed.

    :param venv: the base VecEnv (from :func:`prefrl.envs.make_vec_env`).
    :param segment_length: ``H``, steps per segment.
    :param source: initial value of :attr:`source`.
    :param allow_wrapped: skip the check that ``venv`` is not itself a ``VecEnvWrapper``.
    """

    # segments are rated from their factors: a base env without them is a setup error, not F = 0
    require_factors = True

    def __init__(
        self, venv: VecEnv, segment_length: int, source: int = 0, allow_wrapped: bool = False
    ) -> None:
        if isinstance(venv, VecEnvWrapper) and not allow_wrapped:
            raise ValueError(
                f"TrajectoryRecorder must wrap the base VecEnv directly, got {type(venv).__name__}: "
                "wrappers below it would change the recorded observations or rewards"
            )
        if segment_length < 1:
            raise ValueError(f"segment_length must be >= 1, got {segment_length}")
        super().__init__(venv)
        if not isinstance(self.observation_space, spaces.Box) or not isinstance(
            self.action_space, spaces.Box
        ):
            raise TypeError("TrajectoryRecorder needs Box observation and action spaces")
        self.segment_length = segment_length
        self.source = source
        self._low = self.action_space.low.astype(np.float32)
        self._high = self.action_space.high.astype(np.float32)
        # Time-major stream buffers [capacity, n_envs, ...]: each step writes one row with basic indexing
        # (cheap for any n_envs); env i's unfinished segment is rows [_start[i], _k). When the buffer is
        # full, the unfinished rows (< H per env) move to the front.
        n, self._capacity = self.num_envs, max(4 * segment_length, 256)
        self._obs = np.zeros((self._capacity, n, *self.observation_space.shape), self.observation_space.dtype)
        self._act = np.zeros((self._capacity, n, *self.action_space.shape), dtype=np.float32)
        self._rew = np.zeros((self._capacity, n), dtype=np.float64)
        self._factors: np.ndarray | None = None  # allocated on the first step (F known from info)
        self._dones = np.zeros((self._capacity, n), dtype=bool)
        self._k = 0
        self._start = np.zeros(n, dtype=np.int64)
        self._earliest = 0  # min(_start): no segment can complete before _k == _earliest + H
        self._finished: list[dict[str, np.ndarray]] = []
        self.num_finished = 0

    def reset(self) -> np.ndarray:
        obs = super().reset()
        # a reset starts new episodes: unfinished segments cannot be continued
        self._k = self._earliest = 0
        self._start[:] = 0
        return obs

    # ---- recording -----------------------------------------------------------------------------
    def _compact(self) -> None:
        """Move the unfinished rows to the front of the full buffers."""
        keep = self._k - self._earliest
        for buf in (self._obs, self._act, self._rew, self._factors, self._dones):
            buf[:keep] = buf[self._earliest : self._k]
        self._start -= self._earliest
        self._k, self._earliest = keep, 0

    def _record(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        factors: np.ndarray,
        dones: np.ndarray,
        next_obs: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if self._factors is None:
            self._factors = np.zeros((self._capacity, self.num_envs, factors.shape[1]), dtype=np.float64)
        if self._k == self._capacity:
            self._compact()
        k, h = self._k, self.segment_length
        self._obs[k] = obs
        # record the action the env applied: SB3 policies may output actions outside the Box bounds
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, *self.action_space.shape)
        np.minimum(np.maximum(actions, self._low, out=self._act[k]), self._high, out=self._act[k])
        self._rew[k] = rewards
        self._factors[k] = factors
        self._dones[k] = dones
        self._k = k = k + 1
        if k - self._earliest >= h:
            complete = np.flatnonzero(k - self._start == h)
            self._emit(complete, next_obs)
            self._start[complete] = k
        if np.count_nonzero(dones):  # a third of dones.any()'s cost for small arrays
            # an episode end drops the unfinished segment; the next episode starts a new one
            self._start[dones] = k
        self._earliest = int(self._start.min())

    def _emit(self, envs: np.ndarray, next_obs: np.ndarray) -> None:
        """Store the segments of ``envs``, which all end at the newest row."""
        rows = slice(self._k - self.segment_length, self._k)
        assert self._factors is not None
        self._finished.append(
            {
                "obs": self._obs[rows, envs].swapaxes(0, 1).copy(),
                "act": self._act[rows, envs].swapaxes(0, 1).copy(),
                "reward": self._rew[rows, envs].T.copy(),
                "factors": self._factors[rows, envs].swapaxes(0, 1).copy(),
                "dones": self._dones[rows, envs].T.copy(),
                "next_obs": next_obs[envs],
                "source": np.full(len(envs), self.source, dtype=np.int64),
            }
        )
        self.num_finished += len(envs)

    @property
    def num_pending(self) -> int:
        """Finished segments not yet popped."""
        return sum(len(chunk["source"]) for chunk in self._finished)

    def pop_segments(self) -> SegmentBatch | None:
        """Return the finished segments (in completion order, then env index) and forget them.

        Returns ``None`` if there are none. Unfinished segments are kept and completed by later steps.
        """
        if not self._finished:
            return None
        chunks, self._finished = self._finished, []
        return SegmentBatch(**{key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]})


# ---------------------------------------------------------------------------------------------------
# Recording the rollout
# ---------------------------------------------------------------------------------------------------
class RolloutRecorder(StepRecorder):
    """Records every step that passes through it; optionally hides the env reward from the learner.

    Place it directly above the base VecEnv (below any ``VecNormalize``) so it sees raw observations.
    Actions are recorded as received (SB3's PPO has already clipped them to the Box bounds) and factors
    default to ``F = 0`` where an env provides none. With ``hide_reward`` (default) the reward returned
    upwards is zero and the true one goes to ``info["true_reward"]``: on a time-limit truncation SB3 then
    stores ``0 + gamma * V(terminal_obs)`` in its buffer, i.e. exactly the timeout bootstrap, and nothing
    of the env reward.

    :param venv: the VecEnv to wrap (Box observations and actions)
    :param hide_reward: return zero rewards upwards
    """

    def __init__(self, venv: VecEnv, hide_reward: bool = True) -> None:
        if not isinstance(venv.observation_space, spaces.Box):
            raise TypeError(f"RolloutRecorder needs a Box observation space, got {venv.observation_space}")
        super().__init__(venv)
        self.hide_reward = hide_reward
        self._steps: list[tuple[np.ndarray, ...]] = []

    def reset(self) -> np.ndarray:
        obs = super().reset()
        self._steps.clear()  # a reset starts new episodes: earlier records are no longer contiguous
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = super().step_wait()
        if self.hide_reward:
            for info, reward in zip(infos, rewards, strict=True):
                info["true_reward"] = float(reward)
            rewards = np.zeros_like(rewards)
        return obs, rewards, dones, infos

    def _record(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        factors: np.ndarray,
        dones: np.ndarray,
        next_obs: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        actions = np.array(actions).reshape(self.num_envs, -1)  # a copy: the caller may reuse its array
        self._steps.append((obs, actions, np.array(rewards, dtype=np.float64), factors, dones, next_obs))

    @property
    def num_recorded(self) -> int:
        """Steps (per env) recorded since the last :meth:`pop` or reset."""
        return len(self._steps)

    def pop(self, num_steps: int) -> RecordedRollout:
        """The last ``num_steps`` recorded steps (per env); clears the record.

        :raises RuntimeError: fewer steps were recorded (the recorder is not under the rollout's env)
        """
        if len(self._steps) < num_steps:
            raise RuntimeError(
                f"RolloutRecorder holds {len(self._steps)} steps but the rollout has {num_steps}: the "
                "recorder must wrap the env the rollout was collected from"
            )
        steps = self._steps[len(self._steps) - num_steps :]
        self._steps = []
        obs, act, reward, factors, dones, next_obs = (np.stack(field) for field in zip(*steps, strict=True))
        return RecordedRollout(obs, act, reward, factors, dones.astype(bool), next_obs)


# --------------------------------------------------------------------------------------------------
# VecEnv wrapper
# --------------------------------------------------------------------------------------------------


class RolloutLog(NamedTuple):
    """Steps logged by :class:`LearnedRewardVecEnvWrapper`, oldest first."""

    #: reward-model inputs, ``[T, n_envs, D]``
    features: np.ndarray
    #: true env rewards, ``[T, n_envs]``
    true_rewards: np.ndarray
    #: rewards the wrapper returned (normalised learned rewards), ``[T, n_envs]``
    rewards: np.ndarray


class LearnedRewardVecEnvWrapper(StepRecorder):
    """Replaces the env reward with a learned one, normalised by a running mean and std.

    Per step it builds the reward-model input of every env (the observation *before* the step, the
    action clipped to the action space, ``info["factors"]``), evaluates the ensemble mean once for all
    envs, normalises it ``(r - mean) / sqrt(var + eps)`` with SB3's :class:`RunningMeanStd` (updated
    with every step's raw learned rewards) and returns it. The true env reward goes to
    ``info["true_reward"]`` and the raw learned one to ``info["learned_reward"]``.

    The inputs, true and returned rewards of the steps since :meth:`clear_log` are kept
    (:meth:`rollout_log`), so an agent can relabel a finished rollout with a refitted model and measure
    the correlation between learned and true reward.

    The normalisation statistics can be frozen (``update_normalization=False``: a saved reward model used
    as it was trained, see :func:`prefrl.reward_artifact.load_reward_model`) and are read and restored
    with :meth:`normalization_state` / :meth:`set_normalization_state`.

    **Deferred rewards** (``deferred=True``): for an agent that sets every reward of a rollout at its end
    anyway (rm_ppo relabels the finished rollout through its rollout buffer), per-step predictions are
    wasted work. The wrapper then only logs each step's inputs and returns zero rewards (``info`` gets
    ``"true_reward"`` only); :meth:`rollout_log` builds the features of all logged steps at once and
    the agent evaluates the model in one batched call (:meth:`observe_rewards` feeds the normaliser).
    This cut rm_ppo's per-step wrapper cost about five-fold on Pendulum.

    :param venv: the env to wrap (below any observation/reward normalisation: the model sees raw obs)
    :param ensemble: the reward model (its ``inputs`` decide the features)
    :param normalize: normalise the learned reward; off returns the ensemble mean as is
    :param epsilon: added to the variance
    :param log_capacity: most recent steps kept in the rollout log
    :param update_normalization: update the running statistics with every step's learned rewards; off
        keeps them as they are (:meth:`reset_normalization` still restarts them when asked)
    :param deferred: log the steps' inputs and return zero rewards; the agent computes the rewards of the
        whole rollout at its end (see above)
    """

    def __init__(
        self,
        venv: VecEnv,
        ensemble: RewardEnsemble,
        normalize: bool = True,
        epsilon: float = 1e-8,
        log_capacity: int = 100_000,
        update_normalization: bool = True,
        deferred: bool = False,
    ) -> None:
        super().__init__(venv)
        if not isinstance(self.action_space, spaces.Box):
            raise TypeError("LearnedRewardVecEnvWrapper needs a Box action space")
        self.deferred = deferred
        self.ensemble = ensemble
        # a reward model on [obs, factors] cannot run on an env without them: fail at the first step
        self.require_factors = ensemble.inputs == "obs_factors"
        self.normalize = normalize
        self.epsilon = epsilon
        self.update_normalization = update_normalization
        self.reward_rms = RunningMeanStd(shape=())
        self._predict = ensemble.numpy_predictor()
        self._predict_version = ensemble.version
        self._rewards: np.ndarray | None = None  # the learned rewards of the step being completed
        # (features, true reward, returned reward) per step; bounded, so a wrapper nobody clears cannot
        # grow without limit
        self._log: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=log_capacity)

    # ---- normalisation ----------------------------------------------------------------------------
    def normalize_reward(self, rewards: np.ndarray) -> np.ndarray:
        """``(r - mean) / sqrt(var + eps)`` with the current running statistics (identity if disabled)."""
        if not self.normalize:
            return np.asarray(rewards, dtype=np.float32)
        return ((rewards - self.reward_rms.mean) / np.sqrt(self.reward_rms.var + self.epsilon)).astype(
            np.float32
        )

    def observe_rewards(self, rewards: np.ndarray) -> None:
        """Update the running statistics with raw learned rewards (any shape), as the steps would have."""
        if self.normalize and self.update_normalization and np.size(rewards):
            self.reward_rms.update(np.asarray(rewards, dtype=np.float64).reshape(-1))

    def reset_normalization(self, rewards: np.ndarray | None = None) -> None:
        """Restart the running statistics, from ``rewards`` (any shape) if given.

        Called after a refit: statistics of the previous model's outputs do not describe the new one.
        """
        self.reward_rms = RunningMeanStd(shape=())
        if rewards is not None and np.size(rewards) > 1:
            self.reward_rms.update(np.asarray(rewards, dtype=np.float64).reshape(-1))

    def normalization_state(self) -> dict[str, Any]:
        """The output normalisation as plain JSON values: ``normalize`` (on/off), ``epsilon`` and the
        running statistics ``mean``, ``var``, ``count`` (:meth:`set_normalization_state` restores it)."""
        return {
            "normalize": bool(self.normalize),
            "epsilon": float(self.epsilon),
            "mean": float(self.reward_rms.mean),
            "var": float(self.reward_rms.var),
            "count": float(self.reward_rms.count),
        }

    def set_normalization_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`normalization_state` returned (the same keys)."""
        self.normalize = bool(state["normalize"])
        self.epsilon = float(state["epsilon"])
        self.reward_rms = RunningMeanStd(shape=())
        self.reward_rms.mean = np.array(state["mean"], dtype=np.float64)
        self.reward_rms.var = np.array(state["var"], dtype=np.float64)
        self.reward_rms.count = float(state["count"])

    # ---- rollout log ------------------------------------------------------------------------------
    def clear_log(self) -> None:
        """Forget the logged steps."""
        self._log.clear()

    def rollout_log(self, last: int | None = None) -> RolloutLog:
        """The logged steps (the ``last`` ones if given), oldest first, as ``[T, n_envs, ...]`` arrays."""
        n = len(self._log) if last is None else min(int(last), len(self._log))
        steps = list(self._log)[len(self._log) - n :]
        if not steps:
            d = self.ensemble.net.input_dim
            empty = np.zeros((0, self.num_envs))
            return RolloutLog(np.zeros((0, self.num_envs, d), np.float32), empty, empty.astype(np.float32))
        if not self.deferred:
            return RolloutLog(*(np.stack(field) for field in zip(*steps, strict=True)))
        obs, actions, factors, true_rewards = (np.stack(field) for field in zip(*steps, strict=True))
        features = self._features(obs, actions, factors)
        return RolloutLog(features, true_rewards, np.zeros(true_rewards.shape, dtype=np.float32))

    @property
    def num_logged(self) -> int:
        return len(self._log)

    # ---- StepRecorder interface -------------------------------------------------------------------
    def _record(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        factors: np.ndarray,
        dones: np.ndarray,
        next_obs: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        if self.deferred:
            if not self._log:  # a model for another env fails at the first step, not at rollout end
                self._features(obs[None], actions[None], factors[None])
            # obs and factors are never written to afterwards (StepRecorder); the actions are the caller's
            self._log.append((obs, actions.copy(), factors, np.asarray(rewards, dtype=np.float64).copy()))
            for info, r_true in zip(infos, rewards, strict=True):
                info["true_reward"] = float(r_true)
            # a new array each step: SB3 adds the timeout bootstrap to the returned rewards in place
            self._rewards = np.zeros(self.num_envs, dtype=np.float32)
            return
        feats = self._features(obs, actions, factors)
        if self._predict_version != self.ensemble.version:  # the model was refitted: new snapshot
            self._predict = self.ensemble.numpy_predictor()
            self._predict_version = self.ensemble.version
        learned = self._predict(feats)  # one batched call for all envs
        if self.normalize and self.update_normalization:
            self.reward_rms.update(learned)
        for info, r_true, r_learned in zip(infos, rewards, learned, strict=True):
            info["true_reward"] = float(r_true)
            info["learned_reward"] = float(r_learned)
        self._rewards = self.normalize_reward(learned)
        self._log.append((feats, np.asarray(rewards, dtype=np.float64).copy(), self._rewards))

    def _features(self, obs: np.ndarray, actions: np.ndarray, factors: np.ndarray) -> np.ndarray:
        """Reward-model inputs ``[..., D]`` of steps ``[..., *]``, with the actions clipped to the Box."""
        low, high = self.action_space.low, self.action_space.high
        # the action the env applied: SB3 policies may output actions outside the Box bounds
        applied = np.clip(actions, low.reshape(-1), high.reshape(-1))
        feats = reward_features(self.ensemble.inputs, obs, applied, factors)
        if feats.shape[-1] != self.ensemble.input_dim:
            raise SpecError(
                f"the reward model takes {self.ensemble.input_dim} inputs per step, the env gives "
                f"{feats.shape[-1]} (inputs '{self.ensemble.inputs}': observation {obs.shape[-1:]}, action "
                f"{applied.shape[-1:]}, factors {factors.shape[-1:]}): the env is not the one it was "
                "trained on"
            )
        return feats

    def step_wait(self) -> VecEnvStepReturn:
        obs, _, dones, infos = super().step_wait()
        assert self._rewards is not None
        return obs, self._rewards, dones, infos


# ---------------------------------------------------------------------------------------------------
# Rollout <-> trajectories
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedRollout:
    """Every step of one rollout, time-major like SB3's buffer.

    :param obs: raw observation before each step, ``[T, n_envs, obs_dim]``
    :param act: executed (clipped) action, ``[T, n_envs, act_dim]``
    :param reward: true env reward, ``[T, n_envs]``
    :param factors: raw reward factors (``info["factors"]``), ``[T, n_envs, F]`` (``F = 0`` if absent)
    :param dones: episode ended at this step, ``[T, n_envs]`` bool
    :param next_obs: observation after the step (the terminal one at an episode end), ``[T, n_envs, obs_dim]``
    """

    obs: np.ndarray
    act: np.ndarray
    reward: np.ndarray
    factors: np.ndarray
    dones: np.ndarray
    next_obs: np.ndarray

    @property
    def num_steps(self) -> int:
        return self.reward.shape[0]

    @property
    def num_envs(self) -> int:
        return self.reward.shape[1]


def _check_length(num_steps: int, length: int) -> None:
    if length < 1 or num_steps % length:
        raise ValueError(
            f"a rollout of {num_steps} steps per env cannot be cut into trajectories of {length} steps: "
            "n_steps must be a multiple of the trajectory length H"
        )


def _time_to_traj(x: np.ndarray, length: int) -> np.ndarray:
    """``[T, E, ...]`` -> ``[T // H * E, H, ...]`` (trajectory ``k * E + e`` = chunk ``k`` of env ``e``)."""
    t, e = x.shape[:2]
    x = x.reshape(t // length, length, e, *x.shape[2:])
    return np.swapaxes(x, 1, 2).reshape(t // length * e, length, *x.shape[3:])


def cut_trajectories(rollout: RecordedRollout, length: int, source: int = 0) -> SegmentBatch:
    """Cut a rollout into ``N = T // H * n_envs`` trajectories of ``H = length`` steps.

    Episodes are not split out: a trajectory that crosses an episode end keeps its ``dones`` flag (with a
    fixed horizon that is a multiple of ``H`` this never happens).

    :param source: stored in ``SegmentBatch.source`` (e.g. the rollout index = policy version)
    """
    _check_length(rollout.num_steps, length)
    n = rollout.num_steps // length * rollout.num_envs
    return SegmentBatch(
        obs=_time_to_traj(rollout.obs, length),
        act=_time_to_traj(rollout.act, length),
        reward=_time_to_traj(rollout.reward, length),
        factors=_time_to_traj(rollout.factors, length),
        dones=_time_to_traj(rollout.dones, length),
        next_obs=rollout.next_obs[length - 1 :: length].reshape(n, -1),
        source=np.full(n, source, dtype=np.int64),
    )


def spread_over_steps(values: np.ndarray, num_steps: int, num_envs: int, length: int) -> np.ndarray:
    """Per-trajectory values ``[N]`` -> per-step rewards ``[T, n_envs]``, each step getting ``value / H``.

    Inverse of :func:`cut_trajectories`' ordering; the ``H`` steps of a trajectory sum to its value.
    """
    _check_length(num_steps, length)
    chunks = num_steps // length
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (chunks * num_envs,):
        raise ValueError(f"expected {chunks * num_envs} trajectory values, got shape {values.shape}")
    return np.repeat(values.reshape(chunks, num_envs) / length, length, axis=0)


# ---------------------------------------------------------------------------------------------------
# Rollout buffer with a reward hook
# ---------------------------------------------------------------------------------------------------
class RelabelRolloutBuffer(RolloutBuffer):
    """SB3 :class:`RolloutBuffer` whose rewards are supplied by a hook before returns/advantages.

    :meth:`compute_returns_and_advantage` (called by SB3 once a rollout is complete) first calls
    ``relabel_hook(self)`` for the new per-step rewards ``[buffer_size, n_envs]``, then runs SB3's GAE on
    them. What SB3 had stored is kept as :attr:`bootstrap` and, with ``keep_bootstrap``, added back:
    under a :class:`RolloutRecorder` with ``hide_reward`` that is only SB3's ``gamma * V(terminal_obs)``
    added at time-limit truncations, so values keep being bootstrapped across the time limit exactly as
    plain PPO does.

    :param relabel_hook: the reward supplier; may also be attached later as the attribute ``relabel_hook``
        (done by agents, so the hook is never pickled with the model)
    :param keep_bootstrap: add what SB3 stored to the hook's rewards
    """

    def __init__(
        self,
        *args: Any,
        relabel_hook: RelabelHook | None = None,
        keep_bootstrap: bool = True,
        **kwargs: Any,
    ) -> None:
        self.relabel_hook = relabel_hook
        self.keep_bootstrap = keep_bootstrap
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        #: what SB3 stored as rewards (the timeout bootstrap under a reward-hiding recorder)
        self.bootstrap = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        #: the hook's rewards for the current rollout
        self.relabelled = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)

    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        if self.relabel_hook is None:
            raise RuntimeError(
                "RelabelRolloutBuffer has no relabel_hook: refusing to compute advantages from the "
                "stored (env) rewards"
            )
        self.bootstrap = self.rewards.copy()
        relabelled = np.asarray(self.relabel_hook(self), dtype=np.float32)
        if relabelled.shape != self.rewards.shape:
            raise ValueError(
                f"relabel_hook returned rewards of shape {relabelled.shape}, expected {self.rewards.shape}"
            )
        self.relabelled = relabelled
        self.rewards = relabelled + self.bootstrap if self.keep_bootstrap else relabelled.copy()
        super().compute_returns_and_advantage(last_values, dones)
