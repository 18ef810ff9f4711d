"""Policy rollouts -> trajectory segments, and pair / triple sampling.

A segment is ``H`` consecutive steps of one episode (never crossing an episode boundary).
:func:`collect_segments` rolls out a policy (``"random"``, a callable or an SB3 model) through a
:class:`~prefrl.rollout.TrajectoryRecorder` and returns a :class:`~prefrl.types.SegmentBatch`: each env's
stream is cut into consecutive, non-overlapping windows of ``H`` steps starting at the episode start; the
tail of an episode that does not fill a window is dropped. During training the same recorder cuts what
the learner's envs do (see :mod:`prefrl.rollout`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from prefrl.envs import EnvSpec, load_env_spec, make_vec_env
from prefrl.errors import ShapeError
from prefrl.rollout import TrajectoryRecorder
from prefrl.types import SegmentBatch

__all__ = [
    "Policy",
    "all_pairs",
    "collect_segments",
    "sample_pairs",
    "sample_triples",
    "validate_segments",
]

#: ``"random"``, a function ``obs [n_envs, obs_dim] -> act [n_envs, act_dim]``, or an object with SB3's
#: ``predict(obs, deterministic=...) -> (act, state)``
Policy = str | Callable[[np.ndarray], np.ndarray] | Any


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
