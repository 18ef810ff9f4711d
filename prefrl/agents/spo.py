"""SPO: self-play preference optimisation (Swamy et al. 2024, "A Minimaximalist Approach to RLHF").

No reward model. Every PPO rollout is cut into trajectories of ``H`` steps; each trajectory is compared
by the rater with ``K`` opponents drawn from the current rollout and a bounded queue of trajectories
from recent policies; its reward is its win rate ``w`` (labels averaged, ties = 1/2), spread evenly over
its steps (``w / H`` each) and written into the rollout buffer before returns and advantages are
computed. Because only comparisons are used, any rater works, including intransitive and non-Markovian
ones: the policy is pushed towards the minimax winner of the preference game.

Choices (documented here and in agents/spo.yaml):

* **No env reward reaches PPO.** A :class:`~prefrl.rollout.RolloutRecorder` under the training env
  records the true steps for the rater and returns zero rewards upwards; the buffer's rewards are then
  replaced by the win-rate rewards (:class:`~prefrl.rollout.RelabelRolloutBuffer`).
* **Time-limit bootstrap kept.** On a truncation SB3 adds ``gamma * V(terminal_obs)`` to the step reward;
  with the zeroed env reward that is all the buffer held, and SPO adds it back to the win-rate reward
  (``spo.bootstrap_timeouts``): the critic estimates win-rate-to-go, and a time limit is not a terminal
  state of the preference game, exactly as for PPO on the true reward.
* **Uncentred reward by default** (``w / H``, as in the paper): with a fixed horizon centring is a constant
  shift that PPO's advantage normalisation removes (earlier Pendulum runs saw no difference); with early
  termination ``w >= 0`` keeps "surviving" neutral-to-good instead of rewarding early death when most
  trajectories lose. ``spo.centre: true`` uses ``(w - 0.5) / H``.
* **Win rate of an uncompared trajectory is 0.5** (all its comparisons skipped by the rater, or the budget
  ran out part-way through a rollout).
* **Query budget.** Every comparison the rater answers counts (``Agent.num_queries``). ``queries = 0``
  means unlimited (SPO cannot learn without comparisons, so a zero cap is read as "no cap"). When a
  positive budget runs out, the remaining comparisons of that rollout are a random subset; from the next
  rollout on no query is asked and the policy is frozen (learning rate 0) while env steps continue, so
  every run still covers its env-step budget and its curve stays flat at the last policy.
* **Late collapse.** Once all trajectories are near-optimal their win rates are mostly noise, which
  advantage normalisation blows up to full-size updates; a linear learning-rate decay
  (``ppo.learning_rate: lin_1e-3_5e-5``) is the stabiliser used for Pendulum.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.vec_env import VecEnv

from prefrl.agents.on_policy import PPOAgent
from prefrl.agents.registry import register_agent
from prefrl.agents.self_play import TrajectoryQueue, sample_opponents, win_rates
from prefrl.errors import SpecError
from prefrl.rollout import RelabelRolloutBuffer, RolloutRecorder, cut_trajectories, spread_over_steps
from prefrl.spec_utils import ConfigSection
from prefrl.types import SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.raters.base import Rater

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SPOConfig(ConfigSection):
    """The ``spo:`` section."""

    #: trajectory length ``H``; ``None`` = the env spec's segment_length
    segment_length: int | None = None
    #: ``K``: comparisons started by each trajectory
    num_opponents: int = 8
    #: trajectories kept from earlier rollouts as extra opponents (0 = the current rollout only)
    queue_size: int = 160
    #: reward ``(w - 0.5) / H`` instead of ``w / H``
    centre: bool = False
    #: keep SB3's ``gamma * V(terminal_obs)`` at time-limit truncations
    bootstrap_timeouts: bool = True

    def validate(self, where: str) -> None:
        for key, minimum in (("segment_length", 1), ("num_opponents", 1), ("queue_size", 0)):
            value = getattr(self, key)
            if value is not None and value < minimum:
                raise SpecError(f"{where}.{key} must be an integer >= {minimum}, got {value!r}")


class FreezableSchedule:
    """Wraps an SB3 learning-rate schedule; returns 0 once :attr:`frozen` is set (budget exhausted)."""

    def __init__(self, schedule: Callable[[float], float]) -> None:
        self.schedule = schedule
        self.frozen = False

    def __call__(self, progress_remaining: float) -> float:
        return 0.0 if self.frozen else float(self.schedule(progress_remaining))


@register_agent
class SPOAgent(PPOAgent):
    """PPO on win-rate rewards from self-play comparisons (no reward model).

    Config section ``spo`` (:class:`SPOConfig`): ``segment_length`` (H), ``num_opponents`` (K),
    ``queue_size``, ``centre``, ``bootstrap_timeouts``; PPO settings under ``ppo`` as for every
    :class:`~prefrl.agents.base.PPOAgent`. ``ppo.n_steps`` must be a multiple of H.
    """

    name = "spo"
    description = "self-play preference optimisation: PPO on win rates among its own rollouts (Swamy 2024)"
    requires_rater = True
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {"spo": SPOConfig}

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        options: SPOConfig = self.parse_sections(config)["spo"]  # type: ignore[assignment]
        self.segment_length = (
            env_spec.segment_length if options.segment_length is None else options.segment_length
        )
        self.num_opponents = options.num_opponents
        self.centre = options.centre
        self.queue = TrajectoryQueue(options.queue_size)
        self._check_rollout_shape(env_spec, config)
        if env_spec.horizon % self.segment_length:
            warnings.warn(
                f"spo on '{env_spec.name}': horizon {env_spec.horizon} is not a multiple of H="
                f"{self.segment_length}, so some trajectories span two episodes",
                stacklevel=2,
            )
        self._recorder: RolloutRecorder | None = None
        self._rollouts = 0
        self._last: dict[str, float] = {}
        super().__init__(env_spec, config, rater, seed, device)
        buffer = self.model.rollout_buffer
        assert isinstance(buffer, RelabelRolloutBuffer)
        # attached after construction so the hook (and this agent) is never pickled with the model
        buffer.relabel_hook = self._relabel
        buffer.keep_bootstrap = options.bootstrap_timeouts
        self._lr = FreezableSchedule(self.model.lr_schedule)
        self.model.lr_schedule = self._lr

    def _check_rollout_shape(self, env_spec: EnvSpec, config: Mapping[str, Any]) -> None:
        ppo = config.get("ppo") or {}
        n_steps = int(ppo.get("n_steps", 2048))  # SB3's default
        n_envs = int(config.get("n_envs", 1))
        h = self.segment_length
        if n_steps % h:
            lower, upper = n_steps // h * h, (n_steps // h + 1) * h
            hint = f"e.g. {upper}" if lower == 0 else f"e.g. {lower} or {upper}"
            raise SpecError(
                f"spo on '{env_spec.name}': ppo.n_steps={n_steps} must be a multiple of the trajectory "
                f"length H={h} ({hint}; ideally a multiple of the horizon {env_spec.horizon} too)"
            )
        per_rollout = n_steps // h * n_envs
        if per_rollout < self.num_opponents + 1:
            raise SpecError(
                f"spo on '{env_spec.name}': a rollout yields {per_rollout} trajectories, too few for "
                f"num_opponents={self.num_opponents} (need at least {self.num_opponents + 1}); raise "
                "ppo.n_steps or n_envs, or lower spo.num_opponents"
            )

    # ---- PPOAgent hooks ---------------------------------------------------------------------------
    def wrap_env(self, venv: VecEnv) -> VecEnv:
        self._recorder = RolloutRecorder(venv, hide_reward=True)
        return self._recorder

    def rollout_buffer_class(self) -> type[RolloutBuffer] | None:
        return RelabelRolloutBuffer

    # ---- the SPO reward ---------------------------------------------------------------------------
    def _remaining_queries(self) -> int | None:
        """Queries left under the budget; ``None`` = unlimited (budget 0)."""
        if self.query_budget <= 0:
            return None
        return max(self.query_budget - self.num_queries, 0)

    def _relabel(self, buffer: RelabelRolloutBuffer) -> np.ndarray:
        """Win-rate rewards ``[n_steps, n_envs]`` for the rollout just collected (the buffer hook)."""
        assert self._recorder is not None and self.rater is not None
        rollout = self._recorder.pop(buffer.buffer_size)
        current = cut_trajectories(rollout, self.segment_length, source=self._rollouts)
        self._rollouts += 1
        n = current.num_segments
        pool = current if self.queue.batch is None else SegmentBatch.concatenate([current, self.queue.batch])
        pairs = sample_opponents(n, pool.num_segments, self.num_opponents, self.rng)
        remaining = self._remaining_queries()
        if remaining == 0:
            # budget spent before this rollout: nothing to learn from, keep the policy from now on
            # (PPO reads the learning rate after this hook, so this rollout's update is already frozen)
            self._lr.frozen = True
        if remaining is not None and remaining < len(pairs):
            # a random subset, so the last comparisons are not all given to the first trajectories
            pairs = pairs[np.sort(self.rng.choice(len(pairs), size=remaining, replace=False))]
        if len(pairs):
            before = self.num_queries
            prefs = self.rater.label(pool, pairs, self.rng)
            rates, counts = win_rates(prefs.pairs, prefs.labels, n)
            asked, answered = len(pairs), self.num_queries - before
        else:
            rates, counts = np.full(n, 0.5), np.zeros(n, dtype=np.int64)
            asked = answered = 0
        self.queue.push(current)
        self._log_rollout(rates, counts, asked, answered)
        values = rates - 0.5 if self.centre else rates
        return spread_over_steps(values, rollout.num_steps, rollout.num_envs, self.segment_length)

    def _log_rollout(self, rates: np.ndarray, counts: np.ndarray, asked: int, answered: int) -> None:
        compared = counts > 0
        self._last = {
            "mean_win_rate": float(rates[compared].mean()) if compared.any() else float("nan"),
            "win_rate_std": float(rates[compared].std()) if compared.any() else float("nan"),
            "compared_fraction": float(compared.mean()),
            "rollout_queries": float(answered),
        }
        for key, value in self._last.items():
            self.model.logger.record(f"spo/{key}", value)
        self.model.logger.record("spo/asked", asked)
        self.model.logger.record("spo/queue", len(self.queue))

    def metrics(self) -> dict[str, float]:
        """``mean_win_rate`` (of the latest rollout's compared trajectories; hovers near 0.5 when the
        policy is stable, above it while it improves on the queued older policies), ``win_rate_std``,
        ``compared_fraction`` and ``rollout_queries``; the total query count is progress.csv's
        ``queries`` column."""
        return dict(self._last)
