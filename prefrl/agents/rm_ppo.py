"""RM-PPO: PPO on a reward model learned from preferences (Christiano et al. 2017).

Loop, once per PPO rollout (inside SB3's loop, no fork of PPO):

1. **collect** - PPO rolls out on the *learned* reward
   (:class:`~prefrl.rollout.LearnedRewardVecEnvWrapper`, in deferred mode: it logs each step's inputs and
   the rewards are set for the whole rollout at its end); a :class:`~prefrl.rollout.TrajectoryRecorder`
   directly over the base envs cuts what really happened (true reward, factors) into segments of ``H``
   steps;
2. **query** - when the rollout is complete, pairs of segments from the recent rollouts are chosen
   (``feedback.selection``) and labelled by the rater, within the query schedule;
3. **refit** - the ensemble is refitted incrementally on all labels so far
   (:class:`~prefrl.reward_model.RewardModelTrainer`);
4. **reward** - the finished rollout's rewards are computed in one batched call with the refitted model
   (the normaliser restarted on them after a refit) *before* SB3 computes returns and advantages
   (:class:`~prefrl.rollout.RelabelRolloutBuffer`), so every PPO update optimises the latest model and
   the very first update does not follow an untrained network. ``feedback.relabel_rollout: false``
   uses the model the rollout was collected under instead (the rewards a per-step wrapper would have
   given).

Queries (:mod:`prefrl.feedback`, :mod:`prefrl.query_selection`). The budget ``Q`` is spread over training
by ``feedback.schedule`` (``christiano``, ``hyperbolic``, ``constant``, ``linear``, ``front_loaded``), with
``feedback.initial_query_share`` of it asked after the first rollout (the initial policy). Every pair is
asked at most once in a run (segments carry run-wide ids; pairs are unordered): candidates are distinct
unasked pairs of the segments of the last ``feedback.pool_rollouts`` rollouts, or of the last
``feedback.buffer_rollouts`` when those run short; what cannot be asked stays due for the next rollout.
``feedback.selection`` picks ``quota`` of ``candidate_factor * quota`` candidates (``uniform``,
``disagreement``, ``entropy``, ``kcenter``, ``kcenter_disagreement``, ``kcenter_entropy``; the first batch
is uniform: an untrained ensemble's uncertainty is noise). ``feedback.budget`` says what the budget caps:
``asked`` queries (default, as B-Pref: a query the rater skips still costs) or ``answered`` ones. Labels
follow the project convention (soft labels, ties 0.5; skipped queries are dropped), so every rater works.
The ensemble is refitted when new labels arrived, at most every ``reward_model.refit_every`` rollouts and
``reward_model.refit_interval`` env steps (5,000 by default, B-Pref's interval; the first labels are fitted
at once); a rollout without a refit is rewarded by the current model.

Metrics (progress.csv): ``queries_asked`` and ``queries_answered`` (``queries`` is what the budget counts),
``rm_accuracy`` (held-out pairs), ``rm_new_accuracy`` (each new batch, before
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
from prefrl.feedback import BudgetMode, QueryCounter, QueryPool, Schedule, query_allowance
from prefrl.query_selection import SELECTION_RULES, pair_features, select_queries
from prefrl.reward_artifact import save_reward_model
from prefrl.reward_model import RewardEnsemble, RewardModelTrainer, feature_dim
from prefrl.rollout import LearnedRewardVecEnvWrapper, RelabelRolloutBuffer, TrajectoryRecorder
from prefrl.spec_utils import ConfigSection
from prefrl.types import PreferenceBatch, SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.evaluation import ProgressHook
    from prefrl.raters.base import Rater

logger = logging.getLogger(__name__)

Selection = Literal[
    "uniform", "disagreement", "entropy", "kcenter", "kcenter_disagreement", "kcenter_entropy"
]
RewardInputs = Literal["obs", "obs_act", "obs_factors"]


@dataclass(frozen=True)
class FeedbackConfig(ConfigSection):
    """The ``feedback:`` section: how queries are scheduled, chosen and used."""

    value_names: ClassVar[dict[str, str]] = {
        "schedule": "schedule",
        "selection": "selection mode",
        "budget": "budget mode",
    }

    #: share of the query budget asked after the first rollout (the initial, near-random policy)
    initial_query_share: float = 0.25
    #: how the rest is spread over training (prefrl.feedback: christiano | hyperbolic | constant | linear |
    #: front_loaded); linear with disagreement selection was the most reliable pair in a 15-way comparison
    #: on Pendulum (results/rm_ppo/query_rules.csv: median 91.1, worst of 5 seeds 89.3)
    schedule: Schedule = "linear"
    #: ``christiano``'s T0 in env steps: label rate proportional to T0 / (T + T0)
    christiano_t0: float = 2.0e6
    #: what the budget caps: every asked query (B-Pref: a skipped query costs) or answered ones only
    budget: BudgetMode = "asked"
    #: pair selection rule (prefrl.query_selection)
    selection: Selection = "disagreement"
    #: candidate pairs drawn per query asked (all rules but uniform choose among them)
    candidate_factor: int = 10
    #: steps per queried segment ``H``; ``None`` = the env spec's segment_length
    segment_length: int | None = None
    #: segments of the last this-many rollouts are the candidates
    pool_rollouts: int = 2
    #: rollouts of segments kept for when the recent ones have too few unasked pairs
    buffer_rollouts: int = 8
    #: recompute the finished rollout's rewards with the refitted model before the PPO update
    relabel_rollout: bool = True

    def validate(self, where: str) -> None:
        if not 0.0 <= self.initial_query_share <= 1.0:
            raise SpecError(f"{where}.initial_query_share must lie in [0, 1], got {self.initial_query_share}")
        if self.candidate_factor < 1 or self.pool_rollouts < 1:
            raise SpecError(f"{where}.candidate_factor and {where}.pool_rollouts must be >= 1")
        if self.buffer_rollouts < self.pool_rollouts:
            raise SpecError(f"{where}.buffer_rollouts must be >= pool_rollouts ({self.pool_rollouts})")
        if not self.christiano_t0 > 0:
            raise SpecError(f"{where}.christiano_t0 must be > 0 env steps, got {self.christiano_t0}")
        if self.segment_length is not None and self.segment_length < 1:
            raise SpecError(f"{where}.segment_length must be >= 1 or null, got {self.segment_length}")


@dataclass(frozen=True)
class RewardModelConfig(ConfigSection):
    """The ``reward_model:`` section: the Bradley-Terry ensemble and its incremental refits."""

    value_names: ClassVar[dict[str, str]] = {"inputs": "input mode"}
    ranges: ClassVar[dict[str, str]] = {
        "learning_rate": "(0, inf)",
        "weight_decay": "[0, inf)",
        "net_arch": "[1, inf)",
    }

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
    #: refit at most every this-many rollouts (and only when new labels arrived since the last fit)
    refit_every: int = 1
    #: ... and at most every this-many env steps (B-Pref's interval between reward updates); the first fit
    #: comes with the first labels. Why: a refit is one epoch over all labels, so refitting after every
    #: short rollout (HalfCheetah's 512 steps) made refits the largest cost of a run
    refit_interval: int = 5000

    def validate(self, where: str) -> None:
        if self.ensemble_size < 1:
            raise SpecError(f"{where}.ensemble_size must be >= 1, got {self.ensemble_size}")
        if not 0.0 <= self.holdout_share < 1.0:
            raise SpecError(f"{where}.holdout_share must lie in [0, 1), got {self.holdout_share}")
        if self.batch_size < 1 or self.epochs < 0 or self.initial_epochs < 0:
            raise SpecError(f"{where}: need batch_size >= 1 and epochs, initial_epochs >= 0")
        if self.refit_every < 1 or self.refit_interval < 0:
            raise SpecError(
                f"{where}: need refit_every >= 1 and refit_interval >= 0, got {self.refit_every} and "
                f"{self.refit_interval}"
            )
        if self.max_train_pairs is not None and self.max_train_pairs < 1:
            raise SpecError(f"{where}.max_train_pairs must be >= 1 or null, got {self.max_train_pairs}")


SELECTIONS: tuple[str, ...] = get_args(Selection)
#: rounds of asking per rollout (more than one only when queries were skipped under an answered budget)
_MAX_QUERY_ROUNDS = 5
assert SELECTIONS == SELECTION_RULES, "the config's selection names must be query_selection's rules"


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
        if "disagreement" in self.feedback.selection and self.rm_config.ensemble_size < 2:
            raise SpecError(
                f"feedback.selection '{self.feedback.selection}' needs reward_model.ensemble_size >= 2"
            )
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
        self.query_pool = QueryPool(self.feedback.pool_rollouts, self.feedback.buffer_rollouts)
        self.query_counter = QueryCounter(self.feedback.budget)
        self._allowance = np.zeros(1, dtype=np.int64)
        self._rollout = 0
        self._last_fit_rollout = self._last_fit_step = 0
        self._labels_since_fit = 0
        #: the reward-model version whose outputs the reward normaliser's statistics describe
        self._normalized_version = -1
        #: B-Pref-style pair features (both segments' observations) of every answered pair, for k-center
        self._labelled_pair_features: list[np.ndarray] = []
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
        # rewards are set for the whole rollout at its end (relabel hook): no per-step predictions
        self.reward_env = LearnedRewardVecEnvWrapper(self.recorder, self.reward_model, deferred=True)
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
        rollout_ends = rollout_size * np.arange(1, num_rollouts + 1)
        self._allowance = query_allowance(
            int(query_budget), rollout_ends, fb.initial_query_share, fb.schedule, fb.christiano_t0
        )
        self._rollout = 0
        self.reward_env.clear_log()
        super().learn(total_steps, query_budget, callback)

    # ---- query accounting -------------------------------------------------------------------------
    @property
    def num_queries(self) -> int:
        """Queries counted against the budget (``feedback.budget``: asked or answered)."""
        return self.query_counter.charged

    @property
    def queries_asked(self) -> int:
        return self.query_counter.asked

    @property
    def queries_answered(self) -> int:
        return self.query_counter.answered

    def _query_rounds(self) -> int:
        # under an ``answered`` budget skipped queries are replaced at once by new pairs (a few rounds);
        # under an ``asked`` one the first round asks the whole quota (or every unasked pair there is)
        return _MAX_QUERY_ROUNDS if self.query_counter.budget == "answered" else 1

    def _queries_due(self) -> int:
        target = self._allowance[min(self._rollout, len(self._allowance) - 1)]
        return max(0, int(target) - self.num_queries)

    def _on_rollout_complete(self, buffer: RelabelRolloutBuffer) -> np.ndarray:
        """Relabel hook: query, refit and return the change of the rollout's rewards, ``[T, n_envs]``."""
        segments = self.recorder.pop_segments()
        if segments is not None and len(segments):
            self.query_pool.add(segments)
        for _ in range(self._query_rounds()):
            quota = self._queries_due()
            if quota <= 0 or self.query_pool.num_segments < 2:
                break
            asked_before = self.queries_asked
            prefs = self.collect_preferences(quota)
            if prefs is not None and len(prefs):
                self.trainer.add(prefs)
                self._labels_since_fit += len(prefs)
            if self.queries_asked == asked_before:  # no unasked pair left: the rest stays due
                break
        log = self.reward_env.rollout_log(last=buffer.buffer_size)
        self.reward_env.clear_log()
        if log.features.shape[0] != buffer.buffer_size:
            raise RuntimeError(
                f"reward wrapper logged {log.features.shape[0]} steps, the rollout buffer holds "
                f"{buffer.buffer_size}: is something else stepping the training env?"
            )
        # the rollout's rewards in one batched call: by the model refitted on this rollout's labels, or
        # (relabel_rollout: false) by the model the rollout was collected under
        collected_version = self.reward_model.version
        before = None if self.feedback.relabel_rollout else self.reward_model.predict_mean(log.features)
        if self._refit_due():
            first_fit = self.trainer.num_fits == 0
            self.trainer.fit(self.rm_config.initial_epochs if first_fit else None)
            self._labels_since_fit, self._last_fit_rollout = 0, self._rollout
            self._last_fit_step = self.model.num_timesteps
        self._rollout += 1
        learned = self.reward_model.predict_mean(log.features)  # [T, n_envs]
        self.reward_corr = _pearson(learned, log.true_rewards)
        if before is None:
            rewards, version = learned, self.reward_model.version
        else:
            rewards, version = before, collected_version
        if version != self._normalized_version:
            # a new model restarts the normaliser: statistics of the old model's outputs do not describe it
            self.reward_env.reset_normalization(rewards)
            self._normalized_version = version
        else:
            self.reward_env.observe_rewards(rewards)
        return self.reward_env.normalize_reward(rewards) - log.rewards

    def _refit_due(self) -> bool:
        """New labels arrived, and ``refit_every`` rollouts and ``refit_interval`` env steps have passed."""
        if not self._labels_since_fit:
            return False
        if self.trainer.num_fits == 0:
            return True
        rm = self.rm_config
        return (
            self._rollout - self._last_fit_rollout >= rm.refit_every
            and self.model.num_timesteps - self._last_fit_step >= rm.refit_interval
        )

    # ---- preference collection (overridden by heron's state pairing) -------------------------------
    def collect_preferences(self, quota: int) -> PreferenceBatch | None:
        """Ask up to ``quota`` never-asked pairs of recent segments, chosen by ``feedback.selection``."""
        fb = self.feedback
        segments, ids, candidates = self.query_pool.window(quota, quota * fb.candidate_factor, self.rng)
        if len(candidates) == 0:
            return None
        chosen = candidates[self.select_pairs(segments, candidates, quota)]
        assert self.rater is not None
        labels, answered = self.rater.label_array(segments, chosen, self.rng)
        self.query_pool.mark_asked(ids, chosen)
        self.query_counter.record(len(chosen), int(answered.sum()))
        if answered.any() and "kcenter" in fb.selection:
            self._labelled_pair_features.append(pair_features(segments.obs, chosen[answered]))
        return PreferenceBatch(segments=segments, pairs=chosen[answered], labels=labels[answered])

    def select_pairs(self, segments: SegmentBatch, candidates: np.ndarray, quota: int) -> np.ndarray:
        """Indices of the ``quota`` candidates to ask (:func:`prefrl.query_selection.select_queries`).

        The first batch is uniform: before the first fit the ensemble's uncertainty is noise.
        """
        rule = self.feedback.selection if self.trainer.num_fits else "uniform"
        member_probs = features = labelled = None
        if rule in ("disagreement", "entropy", "kcenter_disagreement", "kcenter_entropy"):
            member_probs = self.reward_model.preference_probabilities(
                self.reward_model.features(segments), candidates
            )
        if "kcenter" in rule:
            # B-Pref's k-center works on the pair's observations (both segments, flattened)
            features = pair_features(segments.obs, candidates)
            labelled = (
                np.concatenate(self._labelled_pair_features)
                if self._labelled_pair_features
                else np.zeros((0, features.shape[1]), dtype=features.dtype)
            )
        return select_queries(
            rule,
            candidates,
            quota,
            self.rng,
            member_probs=member_probs,
            pair_features=features,
            labelled_features=labelled,
        )

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
