"""RM-PPO: PPO on a reward model learned from preferences (Christiano et al. 2017).

Loop, once per PPO rollout (inside SB3's loop, no fork of PPO):

1. **collect** - PPO rolls out on the *learned* reward
   (:class:`~prefrl.reward_model.LearnedRewardVecEnvWrapper`); a
   :class:`~prefrl.segments.TrajectoryRecorder` directly over the base envs cuts what really happened
   (true reward, factors) into segments of ``H`` steps;
2. **query** - when the rollout is complete, pairs of segments from the recent rollouts are chosen
   (``uniform`` or by ensemble ``disagreement``) and labelled by the rater, within the query schedule;
3. **refit** - the ensemble is refitted incrementally on all labels so far
   (:class:`~prefrl.reward_model.RewardModelTrainer`);
4. **relabel** - the finished rollout's rewards are recomputed with the refitted model (and the
   normaliser restarted on them) *before* SB3 computes returns and advantages
   (:class:`~prefrl.rollout.RelabelRolloutBuffer`), so every PPO update optimises the latest model and
   the very first update does not follow an untrained network. ``feedback.relabel_rollout: false``
   keeps the rewards seen during collection.

Query schedule (``feedback.schedule``). With budget ``Q``, ``R`` rollouts and
``s = feedback.initial_query_share``, the cumulative number of queries allowed after rollout ``i`` is
``s Q + (1 - s) Q * sum_{k <= i} w_k / sum_{k < R} w_k`` with ``w_k = 1 / (1 + k)`` (``inverse``,
default: the label rate decays over training, as Christiano et al.), ``w_k = R - k`` (``linear``) or
``w_k = 1`` (``constant``). The share ``s Q`` is asked after the first rollout (the initial, near-random
policy). A rollout asks for the difference between the allowance and the queries answered so far, so
skipped queries (B-Pref ``skip``) are asked again later and the budget is never exceeded.

Pair selection (``feedback.selection``): ``uniform`` draws random distinct pairs from the segments of the
last ``feedback.pool_rollouts`` rollouts; ``disagreement`` draws ``candidate_factor`` times more random
pairs and keeps those with the largest std across members of the predicted preference probability (the
first batch is uniform: an untrained ensemble's disagreement is noise). Labels follow the project
convention (soft labels, ties 0.5 pull the two returns together; skipped queries are dropped), so every
rater works.

Metrics (progress.csv): ``rm_accuracy`` (held-out pairs), ``rm_new_accuracy`` (each new batch, before
training on it), ``reward_corr`` (Pearson correlation of the learned and the true per-step reward on the
latest rollout), ``rm_loss``, ``rm_pairs`` and ``rm_fit_s`` (time spent refitting).

Saved reward model: the run directory gets ``reward_model.pt`` (weights) and ``reward_model.json``
(architecture, inputs, spaces, input and output normalisation, env), and
``prefrl.load_reward_model(run_dir, venv)`` gives the learned reward back as a VecEnv wrapper for any SB3
algorithm (:mod:`prefrl.reward_artifact`; heron's models too).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.vec_env import VecEnv

from prefrl.agents.on_policy import PPOAgent
from prefrl.agents.registry import register_agent
from prefrl.errors import SpecError
from prefrl.reward_artifact import save_reward_model
from prefrl.reward_model import RewardEnsemble, RewardModelTrainer, feature_dim
from prefrl.rollout import LearnedRewardVecEnvWrapper, RelabelRolloutBuffer, TrajectoryRecorder
from prefrl.segments import sample_pairs
from prefrl.spec_utils import ConfigSection, suggest
from prefrl.types import PreferenceBatch, SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.evaluation import ProgressHook
    from prefrl.raters.base import Rater

logger = logging.getLogger(__name__)

Schedule = Literal["inverse", "linear", "constant"]
Selection = Literal["uniform", "disagreement"]
RewardInputs = Literal["obs", "obs_act", "obs_factors"]


@dataclass(frozen=True)
class FeedbackConfig(ConfigSection):
    """The ``feedback:`` section: how queries are scheduled, chosen and used."""

    value_names: ClassVar[dict[str, str]] = {"schedule": "schedule", "selection": "selection mode"}

    #: share of the query budget asked after the first rollout (the initial, near-random policy)
    initial_query_share: float = 0.25
    #: how the rest is spread over the rollouts (see the module docstring)
    schedule: Schedule = "inverse"
    #: pair selection: uniform random pairs, or the largest ensemble disagreement among candidates
    selection: Selection = "disagreement"
    #: disagreement selection: candidate pairs drawn per query asked
    candidate_factor: int = 10
    #: steps per queried segment ``H``; ``None`` = the env spec's segment_length
    segment_length: int | None = None
    #: segments of the last this-many rollouts are the candidates
    pool_rollouts: int = 2
    #: recompute the finished rollout's rewards with the refitted model before the PPO update
    relabel_rollout: bool = True

    def validate(self, where: str) -> None:
        if not 0.0 <= self.initial_query_share <= 1.0:
            raise SpecError(f"{where}.initial_query_share must lie in [0, 1], got {self.initial_query_share}")
        if self.candidate_factor < 1 or self.pool_rollouts < 1:
            raise SpecError(f"{where}.candidate_factor and {where}.pool_rollouts must be >= 1")
        if self.segment_length is not None and self.segment_length < 1:
            raise SpecError(f"{where}.segment_length must be >= 1 or null, got {self.segment_length}")


@dataclass(frozen=True)
class RewardModelConfig(ConfigSection):
    """The ``reward_model:`` section: the Bradley-Terry ensemble and its incremental refits."""

    value_names: ClassVar[dict[str, str]] = {"inputs": "input mode"}

    #: what the model sees per step: obs | obs_act (Christiano et al.) | obs_factors (HERON)
    inputs: RewardInputs = "obs_act"
    #: ensemble members ``K``
    ensemble_size: int = 3
    #: hidden layer sizes of each member
    net_arch: tuple[int, ...] = (64, 64)
    #: hidden activation (a name of prefrl.networks.ACTIVATIONS)
    activation: str = "relu"
    #: Adam learning rate
    learning_rate: float = 1.0e-3
    #: Adam L2 penalty
    weight_decay: float = 0.0
    #: pairs per minibatch
    batch_size: int = 64
    #: warm-started epochs per refit (the data grows slowly, so one epoch per rollout suffices)
    epochs: int = 1
    #: epochs of the first fit
    initial_epochs: int = 20
    #: share of the labelled pairs held out for rm_accuracy
    holdout_share: float = 0.1
    #: each member trains on its own (Poisson) bootstrap resample
    bootstrap: bool = True
    #: train on the most recent pairs only; ``None`` = all
    max_train_pairs: int | None = None

    def validate(self, where: str) -> None:
        if self.ensemble_size < 1:
            raise SpecError(f"{where}.ensemble_size must be >= 1, got {self.ensemble_size}")
        if not 0.0 <= self.holdout_share < 1.0:
            raise SpecError(f"{where}.holdout_share must lie in [0, 1), got {self.holdout_share}")
        if self.batch_size < 1 or self.epochs < 0 or self.initial_epochs < 0:
            raise SpecError(f"{where}: need batch_size >= 1 and epochs, initial_epochs >= 0")
        if self.max_train_pairs is not None and self.max_train_pairs < 1:
            raise SpecError(f"{where}.max_train_pairs must be >= 1 or null, got {self.max_train_pairs}")


SCHEDULES: tuple[str, ...] = get_args(Schedule)
SELECTIONS: tuple[str, ...] = get_args(Selection)


def query_schedule(budget: int, num_rollouts: int, initial_share: float, kind: str = "inverse") -> np.ndarray:
    """Cumulative query allowance after each rollout, ``[num_rollouts]`` int, ending at ``budget``.

    ``C_i = s Q + (1 - s) Q * W_i / W_{R-1}`` with ``W_i = sum_{k <= i} w_k`` and ``w_k = 1 / (1 + k)``
    (``inverse``), ``R - k`` (``linear``) or ``1`` (``constant``); rounded down, non-decreasing.
    """
    if kind not in SCHEDULES:
        raise SpecError(
            f"feedback.schedule: unknown schedule '{kind}'{suggest(str(kind), SCHEDULES)}; "
            f"one of {', '.join(SCHEDULES)}"
        )
    if not 0.0 <= initial_share <= 1.0:
        raise SpecError(f"feedback.initial_query_share must lie in [0, 1], got {initial_share}")
    if num_rollouts < 1:
        raise ValueError(f"num_rollouts must be >= 1, got {num_rollouts}")
    k = np.arange(num_rollouts, dtype=np.float64)
    weights = {"inverse": 1.0 / (1.0 + k), "linear": num_rollouts - k, "constant": np.ones_like(k)}[kind]
    share = np.cumsum(weights) / weights.sum()
    cumulative = initial_share * budget + (1.0 - initial_share) * budget * share
    allowance = np.floor(cumulative + 1e-9).astype(np.int64)
    allowance[-1] = budget
    return allowance


@register_agent
class RewardModelPPO(PPOAgent):
    """PPO on a Bradley-Terry reward-model ensemble refitted from rater queries on a schedule.

    Config sections (beyond :class:`~prefrl.agents.on_policy.PPOAgent`'s): ``feedback``
    (:class:`FeedbackConfig`) and ``reward_model`` (:class:`RewardModelConfig`). With observation
    normalisation (``normalize``), the reward normalisation of ``VecNormalize`` is switched off: the
    learned reward is already normalised by the reward wrapper.
    """

    name = "rm_ppo"
    description = "PPO on a Bradley-Terry reward-model ensemble fitted to rater labels (Christiano 2017)"
    requires_rater = True
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {
        "feedback": FeedbackConfig,
        "reward_model": RewardModelConfig,
    }

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        config = dict(config)
        sections = self.parse_sections(config)
        self.feedback: FeedbackConfig = sections["feedback"]  # type: ignore[assignment]
        self.rm_config: RewardModelConfig = sections["reward_model"]  # type: ignore[assignment]
        if self.feedback.selection == "disagreement" and self.rm_config.ensemble_size < 2:
            raise SpecError("feedback.selection 'disagreement' needs reward_model.ensemble_size >= 2")
        normalize = config.get("normalize", False)
        if normalize:
            # the learned reward is normalised by the wrapper; VecNormalize must not rescale it again
            # (relabelling a rollout assumes the buffer holds the wrapper's rewards)
            config["normalize"] = {
                **(dict(normalize) if isinstance(normalize, Mapping) else {}),
                "norm_reward": False,
            }
        super().__init__(env_spec, config, rater, seed, device)
        assert self.model.rollout_buffer is not None
        buffer = self.model.rollout_buffer
        assert isinstance(buffer, RelabelRolloutBuffer)
        # attached, not passed to PPO, so the hook is never pickled with the model
        buffer.relabel_hook = self._on_rollout_complete
        self._pool: deque[SegmentBatch] = deque(maxlen=self.feedback.pool_rollouts)
        self._allowance = np.zeros(1, dtype=np.int64)
        self._rollout = 0
        self.reward_corr = float("nan")

    @property
    def segment_length(self) -> int:
        """Steps per queried segment ``H``."""
        h = self.feedback.segment_length
        return self.env_spec.segment_length if h is None else h

    # ---- PPOAgent hooks ---------------------------------------------------------------------------
    def wrap_env(self, venv: VecEnv) -> VecEnv:
        """``base envs -> TrajectoryRecorder -> LearnedRewardVecEnvWrapper`` (+ normalisation above)."""
        rm = self.rm_config
        obs_dim = int(np.prod(venv.observation_space.shape))
        act_dim = int(np.prod(venv.action_space.shape))
        self.reward_model = RewardEnsemble(
            inputs=rm.inputs,
            input_dim=feature_dim(rm.inputs, obs_dim, act_dim, self.env_spec.num_factors),
            num_members=rm.ensemble_size,
            net_arch=list(rm.net_arch),
            activation=rm.activation,
            seed=self.seed,
        )
        self.reward_model.eval()
        self.trainer = RewardModelTrainer(
            self.reward_model,
            learning_rate=rm.learning_rate,
            batch_size=rm.batch_size,
            epochs=rm.epochs,
            holdout_share=rm.holdout_share,
            bootstrap=rm.bootstrap,
            max_train_pairs=rm.max_train_pairs,
            weight_decay=rm.weight_decay,
            rng=np.random.default_rng([self.seed, 1]),
        )
        self.recorder = TrajectoryRecorder(venv, self.segment_length)
        self.reward_env = LearnedRewardVecEnvWrapper(self.recorder, self.reward_model)
        return self.reward_env

    def rollout_buffer_class(self) -> type[RolloutBuffer]:
        return RelabelRolloutBuffer

    def rollout_buffer_kwargs(self) -> dict[str, Any]:
        # SB3 stores wrapper reward + gamma * V(terminal_obs) at truncations; the hook returns the change
        # of the reward, so the bootstrap term is kept
        return {"keep_bootstrap": True}

    # ---- training ---------------------------------------------------------------------------------
    def learn(self, total_steps: int, query_budget: int, callback: ProgressHook | None = None) -> None:
        if query_budget <= 0:
            raise SpecError(
                f"agent '{self.name}' learns its reward from preference queries: the query budget must be "
                f"> 0, got {query_budget}"
            )
        rollout_size = int(self.model.n_steps) * self.venv.num_envs
        num_rollouts = max(1, math.ceil(int(total_steps) / rollout_size))
        fb = self.feedback
        self._allowance = query_schedule(int(query_budget), num_rollouts, fb.initial_query_share, fb.schedule)
        self._rollout = 0
        self.reward_env.clear_log()
        super().learn(total_steps, query_budget, callback)

    def _queries_due(self) -> int:
        target = self._allowance[min(self._rollout, len(self._allowance) - 1)]
        return max(0, int(target) - self.num_queries)

    def _on_rollout_complete(self, buffer: RelabelRolloutBuffer) -> np.ndarray:
        """Relabel hook: query, refit and return the change of the rollout's rewards, ``[T, n_envs]``."""
        segments = self.recorder.pop_segments()
        if segments is not None:
            self._pool.append(segments)
        quota = self._queries_due()
        refitted = False
        if quota > 0 and self._pool:
            pool = SegmentBatch.concatenate(list(self._pool))
            prefs = self.collect_preferences(pool, quota)
            if prefs is not None and len(prefs):
                first_fit = self.trainer.num_fits == 0
                self.trainer.add(prefs)
                self.trainer.fit(self.rm_config.initial_epochs if first_fit else None)
                refitted = True
        self._rollout += 1

        log = self.reward_env.rollout_log(last=buffer.buffer_size)
        self.reward_env.clear_log()
        if log.features.shape[0] != buffer.buffer_size:
            raise RuntimeError(
                f"reward wrapper logged {log.features.shape[0]} steps, the rollout buffer holds "
                f"{buffer.buffer_size}: is something else stepping the training env?"
            )
        learned = self.reward_model.predict_mean(log.features)  # [T, n_envs]
        self.reward_corr = _pearson(learned, log.true_rewards)
        if not refitted or not self.feedback.relabel_rollout:
            return np.zeros_like(log.rewards)
        # the normaliser restarts on the new model's rewards for this rollout: statistics of the old
        # model's outputs do not describe the new one
        self.reward_env.reset_normalization(learned)
        return self.reward_env.normalize_reward(learned) - log.rewards

    # ---- preference collection (overridden by heron) ----------------------------------------------
    def collect_preferences(self, pool: SegmentBatch, quota: int) -> PreferenceBatch | None:
        """Choose ``quota`` pairs from ``pool`` and have the rater label them."""
        if len(pool) < 2:
            return None
        pairs = self.select_pairs(pool, quota)
        assert self.rater is not None
        return self.rater.label(pool, pairs, self.rng)

    def select_pairs(self, pool: SegmentBatch, quota: int) -> np.ndarray:
        """``[quota, 2]`` pairs of distinct segments of ``pool``, uniform or by ensemble disagreement."""
        if self.feedback.selection == "uniform" or self.trainer.num_fits == 0:
            return sample_pairs(len(pool), quota, self.rng)
        candidates = sample_pairs(len(pool), quota * self.feedback.candidate_factor, self.rng)
        probs = self.reward_model.preference_probabilities(self.reward_model.features(pool), candidates)
        disagreement = probs.std(axis=0)
        # stable sort: ties (e.g. identical candidates) keep the random order of the candidates
        return candidates[np.argsort(-disagreement, kind="stable")[:quota]]

    # ---- reporting --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        return {**self.trainer.metrics(), "reward_corr": self.reward_corr}

    def save(self, path: str | Path) -> None:
        """The policy (``policy.zip``) and, next to it, the reward model as a loadable artefact
        (``reward_model.pt`` + ``reward_model.json``, see :mod:`prefrl.reward_artifact`)."""
        super().save(path)
        save_reward_model(
            self.reward_model,
            Path(path).parent,
            env_spec=self.env_spec,
            observation_space=self.reward_env.observation_space,
            action_space=self.reward_env.action_space,
            normalization=self.reward_env.normalization_state(),
            agent=self.name,
        )


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
