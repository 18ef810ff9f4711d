"""Self-play mechanics shared by preference agents that reward trajectories by their win rate (SPO).

Pure pieces, separate from any agent:

* :class:`RolloutRecorder` - a VecEnv wrapper that records every step of the training rollout (raw
  observations, executed actions, true rewards, reward factors, dones) and hands the learner a zero
  reward, so no env reward can reach the policy update;
* :func:`cut_trajectories` / :func:`spread_over_steps` - rollout ``[T, n_envs]`` <-> ``N`` trajectories of
  ``H`` steps;
* :func:`sample_opponents` and :func:`win_rates` - who is compared with whom, and the win-rate arithmetic;
* :class:`TrajectoryQueue` - a bounded FIFO of recent trajectories (opponents from earlier policies);
* :class:`RelabelRolloutBuffer` - an SB3 rollout buffer that asks a hook for the rewards before it
  computes returns and advantages.

Trajectory order. A rollout of ``T`` steps per env is cut into ``T // H`` consecutive chunks per env;
trajectory ``n = k * n_envs + e`` holds steps ``[k * H, (k + 1) * H)`` of env ``e``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from prefrl.segments import StepRecorder
from prefrl.types import SegmentBatch

#: ``hook(buffer) -> rewards [buffer_size, n_envs]`` supplying the rewards a rollout is trained on
RelabelHook = Callable[["RelabelRolloutBuffer"], np.ndarray]


# ---------------------------------------------------------------------------------------------------
# Win-rate arithmetic
# ---------------------------------------------------------------------------------------------------
def win_rates(pairs: np.ndarray, labels: np.ndarray, num_players: int) -> tuple[np.ndarray, np.ndarray]:
    """Win rate of each player from answered comparisons.

    Every comparison ``(i, j)`` with label ``y = P(i preferred over j)`` credits ``y`` to ``i`` and
    ``1 - y`` to ``j``; a tie (``y = 0.5``) is half a win for both. Only indices below ``num_players`` are
    players; larger indices are opponents (e.g. queued trajectories of older policies) that receive no
    credit. Skipped comparisons are simply absent from ``pairs``, so they do not count.

    :param pairs: ``[M, 2]`` int, answered comparisons (indices into one segment pool)
    :param labels: ``[M]`` float in ``[0, 1]``
    :param num_players: number of players ``N`` (pool indices ``0 .. N-1``)
    :return: ``(rates [N], counts [N])``: mean credit per player, and how many comparisons it took part in;
        a player with no answered comparison gets the neutral rate 0.5 (neither better nor worse than
        its opponents), so a skip-heavy rater does not push its trajectories either way.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.float64)
    if labels.shape != (pairs.shape[0],):
        raise ValueError(f"labels must be [M]={pairs.shape[0]}, got shape {labels.shape}")
    credit = np.zeros(num_players, dtype=np.float64)
    counts = np.zeros(num_players, dtype=np.int64)
    for side, side_credit in ((0, labels), (1, 1.0 - labels)):
        players = pairs[:, side]
        mine = players < num_players
        credit += np.bincount(players[mine], weights=side_credit[mine], minlength=num_players)
        counts += np.bincount(players[mine], minlength=num_players)
    rates = np.full(num_players, 0.5)
    seen = counts > 0
    rates[seen] = credit[seen] / counts[seen]
    return rates, counts


def sample_opponents(
    num_players: int, pool_size: int, num_opponents: int, rng: np.random.Generator
) -> np.ndarray:
    """Comparisons of every player with ``num_opponents`` distinct others from the pool.

    Players are pool indices ``0 .. num_players-1``; opponents are drawn uniformly without replacement
    from the whole pool (players included) minus the player itself. Which side of the pair the player
    takes is a fair coin, so a rater with a position bias favours nobody.

    :return: ``[num_players * num_opponents, 2]`` int pool indices, grouped by player
    """
    if num_opponents < 1:
        raise ValueError(f"num_opponents must be >= 1, got {num_opponents}")
    if not 0 < num_players <= pool_size:
        raise ValueError(f"need 0 < num_players ({num_players}) <= pool_size ({pool_size})")
    if num_opponents > pool_size - 1:
        raise ValueError(
            f"cannot draw {num_opponents} distinct opponents from a pool of {pool_size} trajectories "
            "(the player itself excluded); lower num_opponents or collect more trajectories per rollout"
        )
    # the K smallest of i.i.d. uniform keys are a uniform K-subset; keys index the pool without the player
    keys = rng.random((num_players, pool_size - 1))
    picks = np.argpartition(keys, num_opponents - 1, axis=1)[:, :num_opponents]
    players = np.arange(num_players)[:, None]
    opponents = picks + (picks >= players)  # skip over the player's own index
    first = np.broadcast_to(players, opponents.shape).reshape(-1)
    second = opponents.reshape(-1)
    swap = rng.random(first.shape[0]) < 0.5
    return np.stack([np.where(swap, second, first), np.where(swap, first, second)], axis=1)


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
# Opponent queue
# ---------------------------------------------------------------------------------------------------
class TrajectoryQueue:
    """Bounded FIFO of recent trajectories: pushing beyond ``capacity`` drops the oldest ones.

    :param capacity: maximum number of trajectories kept (``0`` keeps none)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"queue capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self._batch: SegmentBatch | None = None

    def push(self, batch: SegmentBatch) -> None:
        """Append ``batch`` (newest last) and keep only the newest ``capacity`` trajectories."""
        if self.capacity == 0 or batch.num_segments == 0:
            return
        merged = batch if self._batch is None else SegmentBatch.concatenate([self._batch, batch])
        self._batch = merged[max(merged.num_segments - self.capacity, 0) :]

    @property
    def batch(self) -> SegmentBatch | None:
        """The queued trajectories, oldest first (``None`` while empty)."""
        return self._batch

    def __len__(self) -> int:
        return 0 if self._batch is None else self._batch.num_segments

    def clear(self) -> None:
        self._batch = None


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
