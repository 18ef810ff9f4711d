"""Rollouts -> trajectory segments, and pair / triple sampling.

A segment is ``H`` consecutive steps of one episode (never crossing an episode boundary). Two ways to get
segments:

- :func:`collect_segments` rolls out a policy (``"random"``, a callable or an SB3 model) and returns a
  :class:`~prefrl.types.SegmentBatch`;
- :class:`TrajectoryRecorder` is a VecEnv wrapper that records what the base envs do during training
  (e.g. under PPO) and hands out complete segments with :meth:`TrajectoryRecorder.pop_segments`.

:class:`StepRecorder` is the per-step transition bookkeeping shared by :class:`TrajectoryRecorder` and
:class:`~prefrl.selfplay.RolloutRecorder` (which records whole rollouts for self-play).

Both cut each env's stream into consecutive, non-overlapping windows of ``H`` steps starting at the
episode start; the tail of an episode that does not fill a window is dropped.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from prefrl.envs import EnvSpec, load_env_spec, make_vec_env
from prefrl.types import SegmentBatch, ShapeError

__all__ = [
    "Policy",
    "StepRecorder",
    "TrajectoryRecorder",
    "all_pairs",
    "collect_segments",
    "sample_pairs",
    "sample_triples",
    "validate_segments",
]

#: ``"random"``, a function ``obs [n_envs, obs_dim] -> act [n_envs, act_dim]``, or an object with SB3's
#: ``predict(obs, deterministic=...) -> (act, state)``
Policy = str | Callable[[np.ndarray], np.ndarray] | Any


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


class _NoCopyDummyVecEnv(DummyVecEnv):
    """``DummyVecEnv`` without the per-step ``deepcopy`` of the infos.

    The deepcopy is a third of the per-step cost for cheap envs; it is safe to skip inside
    :func:`collect_segments`, which owns the env and copies what it keeps (each ``env.step`` returns a
    fresh info dict anyway).
    """

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        for i in range(self.num_envs):
            obs, self.buf_rews[i], terminated, truncated, self.buf_infos[i] = self.envs[i].step(
                self.actions[i]
            )
            self.buf_dones[i] = terminated or truncated
            self.buf_infos[i]["TimeLimit.truncated"] = truncated and not terminated
            if self.buf_dones[i]:
                self.buf_infos[i]["terminal_observation"] = obs
                obs, self.reset_infos[i] = self.envs[i].reset()
            self._save_obs(i, obs)
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), list(self.buf_infos)

    def _obs_from_buf(self) -> np.ndarray:
        # a Box observation lives under the key None; a plain copy replaces SB3's deepcopy
        return self.buf_obs[None].copy()


class _RandomPolicy:
    """Uniform random actions in the Box bounds, drawn from ``rng`` in blocks (one call per 1024 steps)."""

    def __init__(self, action_space: spaces.Box, n_envs: int, rng: np.random.Generator, block: int = 1024):
        self.low, self.high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)
        self.shape = (block, n_envs, *action_space.shape)
        self.dtype = action_space.dtype
        self.rng = rng
        self._block = np.empty(0)
        self._next = block

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self._next >= self.shape[0]:
            self._block = self.rng.uniform(self.low, self.high, size=self.shape).astype(self.dtype)
            self._next = 0
        self._next += 1
        return self._block[self._next - 1]


def _as_action_fn(
    policy: Policy, action_space: spaces.Box, n_envs: int, rng: np.random.Generator, deterministic: bool
) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(policy, str):
        if policy != "random":
            raise ValueError(f"unknown policy '{policy}': use 'random', a callable or an SB3 model")
        return _RandomPolicy(action_space, n_envs, rng)
    if hasattr(policy, "predict"):
        return lambda obs: policy.predict(obs, deterministic=deterministic)[0]
    if callable(policy):
        return policy
    raise TypeError(f"policy must be 'random', a callable or an SB3 model, got {type(policy).__name__}")


def collect_segments(
    spec: EnvSpec | str,
    policy: Policy,
    num_segments: int,
    segment_length: int | None = None,
    seed: int = 0,
    n_envs: int = 1,
    source: int = 0,
    deterministic: bool = False,
) -> SegmentBatch:
    """Roll out ``policy`` and return ``num_segments`` segments of ``segment_length`` steps.

    :param spec: env spec or its name.
    :param policy: ``"random"`` (uniform actions from a generator seeded by ``seed``), a callable
        ``obs [n_envs, obs_dim] -> act [n_envs, act_dim]``, or an SB3 model (its ``predict``).
    :param segment_length: ``H``; defaults to ``spec.segment_length``.
    :param seed: env ``i`` is seeded ``seed + i``; also seeds the random policy.
    :param n_envs: parallel envs (a ``DummyVecEnv``).
    :param source: value stored in ``SegmentBatch.source``.
    :param deterministic: passed to an SB3 model's ``predict``.
    :returns: a batch with ``obs [N, H, obs_dim]``, ``act [N, H, act_dim]``, ``reward [N, H]``,
        ``factors [N, H, F]``, ``dones [N, H]``, ``next_obs [N, obs_dim]``, ordered by completion time
        (then env index).
    """
    spec = load_env_spec(spec)
    h = spec.segment_length if segment_length is None else int(segment_length)
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if h < 1 or h > spec.horizon:
        raise ValueError(f"segment_length must lie in [1, horizon={spec.horizon}], got {h}")
    rng = np.random.default_rng(seed)
    venv = make_vec_env(spec, n_envs=n_envs, seed=seed, vec_env_cls=_NoCopyDummyVecEnv)
    recorder = TrajectoryRecorder(venv, h, source=source)
    act_fn = _as_action_fn(policy, recorder.action_space, n_envs, rng, deterministic)
    # with early termination enabled, episodes shorter than H never yield a segment: give up eventually
    max_steps = 20 * -(-num_segments * h // n_envs)
    try:
        obs = recorder.reset()
        for _ in range(max_steps):
            if recorder.num_finished >= num_segments:
                break
            obs, _, _, _ = recorder.step(np.asarray(act_fn(obs)))
        else:
            if recorder.num_finished < num_segments:
                raise RuntimeError(
                    f"collected only {recorder.num_finished} of {num_segments} segments of {h} steps in "
                    f"{max_steps} steps per env: episodes of '{spec.name}' are mostly shorter than the "
                    "segment length (does the spec enable early termination?)"
                )
    finally:
        recorder.close()
    batch = recorder.pop_segments()
    assert batch is not None
    return batch[:num_segments]


def sample_pairs(
    num_segments: int, num_pairs: int, rng: np.random.Generator, allow_same: bool = False
) -> np.ndarray:
    """``[num_pairs, 2]`` int64 uniform random pairs of segment indices, distinct unless ``allow_same``."""
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    if num_segments < (1 if allow_same else 2):
        raise ValueError(f"need at least 2 segments to sample distinct pairs, got {num_segments}")
    first = rng.integers(num_segments, size=num_pairs)
    if allow_same:
        second = rng.integers(num_segments, size=num_pairs)
    else:
        # uniform over the other n - 1 indices: draw from [0, n-1) and skip over `first`
        second = rng.integers(num_segments - 1, size=num_pairs)
        second += second >= first
    return np.stack([first, second], axis=1).astype(np.int64)


def all_pairs(num_segments: int) -> np.ndarray:
    """All ``n (n - 1) / 2`` unordered pairs ``(i, j)`` with ``i < j``, ``[M, 2]`` int64."""
    i, j = np.triu_indices(num_segments, k=1)
    return np.stack([i, j], axis=1).astype(np.int64)


def sample_triples(num_segments: int, num_triples: int, rng: np.random.Generator) -> np.ndarray:
    """``[num_triples, 3]`` int64 uniform random triples of three distinct segment indices."""
    if num_segments < 3:
        raise ValueError(f"need at least 3 segments to sample triples, got {num_segments}")
    a = rng.integers(num_segments, size=num_triples)
    b = rng.integers(num_segments - 1, size=num_triples)
    b += b >= a
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # map [0, n-2) onto [0, n) without lo and hi: skip lo, then skip hi (hi > lo)
    c = rng.integers(num_segments - 2, size=num_triples)
    c += c >= lo
    c += c >= hi
    return np.stack([a, b, c], axis=1).astype(np.int64)


def validate_segments(batch: SegmentBatch, spec: EnvSpec | str) -> None:
    """Raise :class:`~prefrl.types.ShapeError` unless the batch's dimensions match the env spec."""
    spec = load_env_spec(spec)
    obs_shape = tuple(spec.observation_space.shape)
    act_shape = tuple(spec.action_space.shape)
    checks = (
        ("obs", batch.obs.shape[2:], obs_shape),
        ("act", batch.act.shape[2:], act_shape),
        ("next_obs", batch.next_obs.shape[1:], obs_shape),
        ("factors", batch.factors.shape[2:], (spec.num_factors,)),
    )
    for name, got, expected in checks:
        if got != expected:
            raise ShapeError(
                f"segments do not match env spec '{spec.name}' ({spec.gym_id}): {name} has per-step shape "
                f"{got}, expected {expected}"
                + (f" (factors: {spec.factor_names})" if name == "factors" else "")
            )
