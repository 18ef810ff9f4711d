"""Evaluation on the TRUE env return and the progress log every agent writes.

* :func:`evaluate_policy` runs deterministic, fixed-horizon episodes in its own eval envs (never the
  training env, so never a learned or relabelled reward) and returns the mean and std of the true return.
* :class:`ProgressHook` is a plain object any agent calls (SB3-based or not, e.g. offline CPL): every
  ``eval_freq`` env steps, at step 0 and at the end it evaluates the agent and appends one row to
  ``progress.csv`` and TensorBoard.

It scores any object with ``predict``, ``num_queries`` and ``metrics`` (:class:`Evaluated`) and imports no
agent; :class:`prefrl.agents.sb3_agent.ProgressCallback` adapts the hook to SB3's callback API.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv
from torch.utils.tensorboard import SummaryWriter

from prefrl.atomic_files import atomic_path
from prefrl.envs import EnvSpec, make_vec_env

logger = logging.getLogger(__name__)

#: a policy: raw observations [n, obs_dim] -> actions [n, act_dim]
PredictFn = Callable[[np.ndarray], np.ndarray]


class Evaluated(Protocol):
    """What :class:`ProgressHook` needs of a learner (every :class:`~prefrl.agents.base.Agent` has it)."""

    @property
    def num_queries(self) -> int:
        """Preference queries counted against the budget so far."""

    @property
    def queries_asked(self) -> int:
        """Queries put to the rater so far, skipped ones included."""

    @property
    def queries_answered(self) -> int:
        """Labels received so far."""

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions ``[n, act_dim]`` for raw env observations ``[n, obs_dim]``."""

    def metrics(self) -> dict[str, float]:
        """Learner-specific scalars for progress.csv."""


#: the columns every progress.csv starts with, in this order
BASE_COLUMNS = (
    "env_steps",
    "queries",
    "queries_asked",
    "queries_answered",
    "wall_s",
    "true_return_mean",
    "true_return_std",
    "normalised_score",
)

#: offset between the run seed and the eval envs' seed, so training and evaluation never share start states
EVAL_SEED_OFFSET = 1_000_003


def episode_returns(
    predict_fn: PredictFn,
    env_spec: EnvSpec,
    n_episodes: int,
    seed: int,
    venv: VecEnv | None = None,
) -> np.ndarray:
    """True undiscounted returns ``[n_episodes]`` of ``predict_fn``, one episode per parallel env.

    :param predict_fn: raw observations ``[n_episodes, obs_dim]`` -> actions ``[n_episodes, act_dim]``
        (use the deterministic policy)
    :param env_spec: environment to evaluate on (its true reward, its fixed horizon)
    :param n_episodes: number of episodes, run in lockstep
    :param seed: seeds the episodes' start states (same seed -> same start states)
    :param venv: eval VecEnv to reuse (``n_episodes`` envs from ``make_vec_env(env_spec)``); a new one is
        built and closed when ``None``
    """
    own_env = venv is None
    if venv is None:
        venv = make_vec_env(env_spec, n_envs=n_episodes, seed=seed)
    if venv.num_envs != n_episodes:
        raise ValueError(f"eval venv has {venv.num_envs} envs, need one per episode ({n_episodes})")
    try:
        venv.seed(seed)
        obs = venv.reset()
        returns = np.zeros(n_episodes, dtype=np.float64)
        running = np.ones(n_episodes, dtype=bool)
        # guard against an env whose time limit is missing: a fixed-horizon episode must end
        for _ in range(10 * env_spec.horizon + 10):
            actions = predict_fn(obs)
            obs, rewards, dones, _ = venv.step(actions)
            # envs that already finished their episode were auto-reset by the VecEnv: ignore them
            returns += np.where(running, rewards, 0.0)
            running &= ~dones
            if not running.any():
                return returns
        raise RuntimeError(f"{env_spec.name}: eval episodes did not end within {10 * env_spec.horizon} steps")
    finally:
        if own_env:
            venv.close()


def evaluate_policy(
    predict_fn: PredictFn,
    env_spec: EnvSpec,
    n_episodes: int,
    seed: int,
    venv: VecEnv | None = None,
) -> tuple[float, float]:
    """Mean and std of the true return over ``n_episodes`` episodes (see :func:`episode_returns`)."""
    returns = episode_returns(predict_fn, env_spec, n_episodes, seed, venv=venv)
    return float(returns.mean()), float(returns.std())


class CSVLog:
    """An append-only CSV file that tolerates columns appearing in later rows.

    Every row is flushed to disk, so a killed run leaves a valid file. When a row brings a new column,
    the whole file is rewritten under the wider header (atomically, via a temporary file); earlier rows
    get empty cells there.
    """

    def __init__(self, path: str | Path, columns: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.columns: list[str] = list(columns)
        self.rows: list[dict[str, Any]] = []
        self._rewrite()

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        new = [key for key in row if key not in self.columns]
        if new:
            self.columns.extend(new)
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)
            f.flush()

    def _rewrite(self) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
            f.flush()
            os.fsync(f.fileno())


class ProgressHook:
    """Evaluates an agent on a schedule and logs one row per evaluation.

    Row columns: :data:`BASE_COLUMNS` (``normalised_score`` is NaN while the env spec has no random/oracle
    returns), then ``agent.metrics()`` and any ``extra`` scalars (e.g. SB3 ``train/`` losses).

    :param env_spec: environment evaluated on (true reward)
    :param eval_freq: env steps between evaluations; evaluation also runs at step 0 and at the end
    :param n_eval_episodes: deterministic episodes per evaluation
    :param seed: the run seed; the eval envs use ``seed + EVAL_SEED_OFFSET`` (same start states every time)
    :param run_dir: where ``progress.csv`` and TensorBoard events (``tb/``) go; ``None`` keeps rows in memory
    :param tensorboard: also write TensorBoard scalars (needs ``run_dir``)
    """

    def __init__(
        self,
        env_spec: EnvSpec,
        eval_freq: int,
        n_eval_episodes: int,
        seed: int,
        run_dir: str | Path | None = None,
        tensorboard: bool = True,
    ) -> None:
        if eval_freq <= 0:
            raise ValueError(f"eval_freq must be positive, got {eval_freq}")
        if n_eval_episodes <= 0:
            raise ValueError(f"n_eval_episodes must be positive, got {n_eval_episodes}")

        self.env_spec = env_spec
        self.eval_freq = int(eval_freq)
        self.n_eval_episodes = int(n_eval_episodes)
        self.eval_seed = seed + EVAL_SEED_OFFSET
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.rows: list[dict[str, float]] = []
        self._venv = make_vec_env(env_spec, n_envs=self.n_eval_episodes, seed=self.eval_seed)
        self._next_eval = 0
        self._last_eval: int | None = None
        self._start = time.perf_counter()
        self._csv: CSVLog | None = None
        self._writer = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._csv = CSVLog(self.run_dir / "progress.csv", BASE_COLUMNS)
            if tensorboard:
                self._writer = SummaryWriter(str(self.tb_dir))

    @property
    def tb_dir(self) -> Path | None:
        """TensorBoard directory inside the run directory."""
        return None if self.run_dir is None else self.run_dir / "tb"

    def attach_sb3_logger(self, model: BaseAlgorithm) -> None:
        """Send the SB3 model's own scalars (``rollout/``, ``train/``) to this run's TensorBoard dir."""
        if self._writer is not None:
            model.set_logger(configure(str(self.tb_dir), ["tensorboard"]))

    def due(self, env_steps: int) -> bool:
        """True if an evaluation is due at ``env_steps``."""
        return env_steps >= self._next_eval

    def maybe_eval(
        self, env_steps: int, agent: Evaluated, extra: Mapping[str, float] | None = None
    ) -> dict[str, float] | None:
        """Evaluate if one is due at ``env_steps``; return the new row or ``None``."""
        return self.on_eval(env_steps, agent, extra) if self.due(env_steps) else None

    def on_end(
        self, env_steps: int, agent: Evaluated, extra: Mapping[str, float] | None = None
    ) -> dict[str, float] | None:
        """Final evaluation, unless ``env_steps`` was just evaluated."""
        return None if self._last_eval == env_steps else self.on_eval(env_steps, agent, extra)

    def on_eval(
        self, env_steps: int, agent: Evaluated, extra: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Evaluate ``agent`` now, log and return the row."""
        mean, std = evaluate_policy(
            agent.predict, self.env_spec, self.n_eval_episodes, self.eval_seed, venv=self._venv
        )
        normalised = float(self.env_spec.normalise(mean)) if self.env_spec.has_normalisation else math.nan
        row: dict[str, float] = {
            "env_steps": int(env_steps),
            "queries": int(agent.num_queries),
            "queries_asked": int(agent.queries_asked),
            "queries_answered": int(agent.queries_answered),
            "wall_s": round(time.perf_counter() - self._start, 3),
            "true_return_mean": mean,
            "true_return_std": std,
            "normalised_score": normalised,
        }
        row.update({k: float(v) for k, v in agent.metrics().items()})
        row.update({k: float(v) for k, v in (extra or {}).items()})
        self._log(row)
        self._last_eval = int(env_steps)
        self._next_eval = (int(env_steps) // self.eval_freq + 1) * self.eval_freq
        return row

    def _log(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self._csv is not None:
            self._csv.append(row)
        if self._writer is not None:
            step = int(row["env_steps"])
            for key, value in row.items():
                if key != "env_steps" and not (isinstance(value, float) and math.isnan(value)):
                    self._writer.add_scalar(key if "/" in key else f"eval/{key}", value, step)
            self._writer.flush()
        logger.info(
            "steps %d queries %d return %.1f +- %.1f",
            row["env_steps"],
            row["queries"],
            row["true_return_mean"],
            row["true_return_std"],
        )

    def close(self) -> None:
        """Close the eval envs and the TensorBoard writer."""
        self._venv.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
