"""Learning a reward from preference queries during training, for any online agent (rm_ppo, heron, pebble).

:class:`PreferenceRewardLearner` owns everything between the rater and the agent's learned reward: the
Bradley-Terry ensemble (:class:`~prefrl.reward_model.RewardEnsemble`) and its incremental trainer, the
pool of recent segments whose pairs are asked at most once (:class:`~prefrl.feedback.QueryPool`), the
asked / answered counters, the query schedule and the refit policy. It knows nothing of PPO or SAC; an
agent drives it at its own *query points* (rm_ppo: the end of every rollout; an off-policy agent: every
``N`` env steps), numbered ``0, 1, 2, ...``:

1. before training, :meth:`~PreferenceRewardLearner.plan` spreads the query budget over the env steps
   at which the agent will ask (``feedback.schedule``, ``feedback.initial_query_share``);
2. at query point ``i`` the agent hands over the segments recorded since the last one
   (:meth:`~PreferenceRewardLearner.add_segments`) and calls :meth:`~PreferenceRewardLearner.ask`
   ``(i)``: never-asked pairs are chosen (``feedback.selection``) and labelled up to the cumulative
   allowance of point ``i``, and the labels go to the trainer (under ``feedback.budget: answered``
   skipped queries are replaced by new pairs at once, in a few rounds);
3. if :meth:`~PreferenceRewardLearner.refit_due` ``(i, env_steps)`` (new labels, and at least
   ``reward_model.refit_every`` query points and ``reward_model.refit_interval`` env steps since the last
   fit; the first labels are fitted at once, for ``reward_model.initial_epochs``), the agent calls
   :meth:`~PreferenceRewardLearner.refit` and then rewards its data with
   :attr:`~PreferenceRewardLearner.reward_model` (e.g. through
   :class:`~prefrl.rollout.LearnedRewardVecEnvWrapper`).

What is compared is overridable: a subclass changes :meth:`~PreferenceRewardLearner.collect_preferences`
and :meth:`~PreferenceRewardLearner.select_pairs` (heron's state pairing does), and
:meth:`~PreferenceRewardLearner.queries_due` / :meth:`~PreferenceRewardLearner.query_rounds`.

The config sections every such agent shares live here: ``feedback:`` (:class:`FeedbackConfig`) and
``reward_model:`` (:class:`RewardModelConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np

from prefrl.errors import SpecError
from prefrl.feedback import BudgetMode, QueryCounter, QueryPool, Schedule, query_allowance
from prefrl.query_selection import SELECTION_RULES, pair_features, select_queries
from prefrl.reward_artifact import save_reward_model
from prefrl.reward_model import RewardEnsemble, RewardModelTrainer, feature_dim
from prefrl.spec_utils import ConfigSection
from prefrl.types import PreferenceBatch, SegmentBatch

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gymnasium import spaces

    from prefrl.envs import EnvSpec
    from prefrl.raters.base import Rater

__all__ = [
    "SELECTIONS",
    "FeedbackConfig",
    "PreferenceRewardLearner",
    "RewardInputs",
    "RewardModelConfig",
    "Selection",
    "check_configs",
    "pearson_correlation",
]

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
    #: front_loaded); linear with disagreement selection was the only pair with every seed above 85 in
    #: both of two 15-way comparisons on Pendulum (results/rm_ppo/query_rules.md: median 91.9, worst of 5
    #: seeds 86.7)
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
    #: stop a fit after the first epoch whose training accuracy exceeds this (B-Pref: 0.97, with up to
    #: ``epochs`` / ``initial_epochs`` epochs); ``None`` always runs them all
    stop_accuracy: float | None = None
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
        if self.stop_accuracy is not None and not 0.0 < self.stop_accuracy <= 1.0:
            raise SpecError(f"{where}.stop_accuracy must lie in (0, 1] or be null, got {self.stop_accuracy}")


SELECTIONS: tuple[str, ...] = get_args(Selection)
#: rounds of asking per query point (more than one only when queries were skipped under an answered budget)
_MAX_QUERY_ROUNDS = 5
assert SELECTIONS == SELECTION_RULES, "the config's selection names must be query_selection's rules"


def check_configs(feedback: FeedbackConfig, reward_model: RewardModelConfig) -> None:
    """Reject section combinations that cannot work together (each section validates itself alone).

    :raises SpecError: an uncertainty-based selection with a one-member ensemble
    """
    if "disagreement" in feedback.selection and reward_model.ensemble_size < 2:
        raise SpecError(f"feedback.selection '{feedback.selection}' needs reward_model.ensemble_size >= 2")


def pearson_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally long arrays (flattened), e.g. a learned and the true reward per
    step (the ``reward_corr`` diagnostic); NaN for fewer than two values or a constant side."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


class PreferenceRewardLearner:
    """A reward model learned from a rater's answers at an agent's query points (see module docstring).

    :param feedback: the ``feedback:`` section (schedule, selection, budget mode, segment pool)
    :param reward_config: the ``reward_model:`` section (ensemble, trainer, refit policy)
    :param obs_dim: flat observation size
    :param act_dim: flat action size
    :param num_factors: reward factors per step (the env spec's ``num_factors``)
    :param rater: answers the queries
    :param seed: seeds the ensemble's initialisation and the trainer's generator
    :param rng: draws candidate pairs, selections and rater noise; an agent passes its own generator
        (default: one seeded by ``seed``)
    :param device: torch device of the reward model (numpy in and out either way)
    :raises SpecError: sections that cannot work together (:func:`check_configs`)
    """

    def __init__(
        self,
        feedback: FeedbackConfig,
        reward_config: RewardModelConfig,
        *,
        obs_dim: int,
        act_dim: int,
        num_factors: int,
        rater: Rater,
        seed: int = 0,
        rng: np.random.Generator | None = None,
        device: str = "cpu",
    ) -> None:
        check_configs(feedback, reward_config)
        self.feedback = feedback
        self.reward_config = rm = reward_config
        self.rater = rater
        self.rng = rng if rng is not None else np.random.default_rng([seed, 2])
        self.reward_model = RewardEnsemble(
            inputs=rm.inputs,
            input_dim=feature_dim(rm.inputs, obs_dim, act_dim, num_factors),
            num_members=rm.ensemble_size,
            net_arch=list(rm.net_arch),
            activation=rm.activation,
            seed=seed,
        ).to(device)  # before the trainer's optimiser takes its parameters
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
            rng=np.random.default_rng([seed, 1]),
            stop_accuracy=rm.stop_accuracy,
        )
        self.query_pool = QueryPool(feedback.pool_rollouts, feedback.buffer_rollouts)
        self.query_counter = QueryCounter(feedback.budget)
        #: cumulative query allowance at each query point (:meth:`plan`); nothing is asked before a plan
        self.allowance = np.zeros(1, dtype=np.int64)
        self._last_index = 0
        self._last_fit_index = self._last_fit_step = 0
        self._labels_since_fit = 0
        #: B-Pref-style pair features (both segments' observations) of every answered pair, for k-center
        self._labelled_pair_features: list[np.ndarray] = []

    # ---- counters ---------------------------------------------------------------------------------
    @property
    def num_queries(self) -> int:
        """Queries counted against the budget (``feedback.budget``: asked or answered)."""
        return self.query_counter.charged

    @property
    def queries_asked(self) -> int:
        """Queries put to the rater, skipped ones included."""
        return self.query_counter.asked

    @property
    def queries_answered(self) -> int:
        """Labels received."""
        return self.query_counter.answered

    # ---- the loop ---------------------------------------------------------------------------------
    def plan(self, query_budget: int, step_ends: np.ndarray | list[int]) -> np.ndarray:
        """Spread ``query_budget`` over the query points at env steps ``step_ends``; return the allowance.

        :param query_budget: queries ``Q`` for the whole run (> 0)
        :param step_ends: increasing env steps at which the agent will call :meth:`ask`, the last one the
            end of training; query point ``i`` may have asked ``allowance[i]`` queries in all
        :raises SpecError: a budget <= 0, or a bad ``feedback`` schedule
        """
        if query_budget <= 0:
            raise SpecError(f"a reward learned from preferences needs a query budget > 0, got {query_budget}")
        fb = self.feedback
        self.allowance = query_allowance(
            int(query_budget), step_ends, fb.initial_query_share, fb.schedule, fb.christiano_t0
        )
        return self.allowance

    def add_segments(self, segments: SegmentBatch | None) -> None:
        """Add the segments recorded since the last query point to the pool (``None``/empty: nothing)."""
        if segments is not None and len(segments):
            self.query_pool.add(segments)

    def queries_due(self, index: int) -> int:
        """Queries still allowed at query point ``index`` (its cumulative allowance minus those charged)."""
        target = self.allowance[min(index, len(self.allowance) - 1)]
        return max(0, int(target) - self.num_queries)

    def query_rounds(self) -> int:
        """Rounds of asking per query point."""
        # under an ``answered`` budget skipped queries are replaced at once by new pairs (a few rounds);
        # under an ``asked`` one the first round asks the whole quota (or every unasked pair there is)
        return _MAX_QUERY_ROUNDS if self.query_counter.budget == "answered" else 1

    def ask(self, index: int) -> int:
        """Query point ``index``: ask what the schedule allows and store the labels; return how many.

        What cannot be asked (too few unasked pairs) stays due: the allowance is cumulative.
        """
        self._last_index = int(index)
        received = 0
        for _ in range(self.query_rounds()):
            quota = self.queries_due(index)
            if quota <= 0 or self.query_pool.num_segments < 2:
                break
            asked_before = self.queries_asked
            prefs = self.collect_preferences(quota)
            if prefs is not None and len(prefs):
                self.trainer.add(prefs)
                self._labels_since_fit += len(prefs)
                received += len(prefs)
            if self.queries_asked == asked_before:  # no unasked pair left: the rest stays due
                break
        return received

    def refit_due(self, index: int, env_steps: int) -> bool:
        """New labels arrived, and ``refit_every`` query points and ``refit_interval`` env steps have
        passed since the last fit (the first labels are fitted at once)."""
        if not self._labels_since_fit:
            return False
        if self.trainer.num_fits == 0:
            return True
        rm = self.reward_config
        return (
            index - self._last_fit_index >= rm.refit_every
            and env_steps - self._last_fit_step >= rm.refit_interval
        )

    def refit(self, env_steps: int, index: int | None = None) -> float:
        """Refit the ensemble on all labels so far (``initial_epochs`` the first time); return the loss.

        :param env_steps: the agent's env steps now (for ``refit_interval``)
        :param index: the query point it follows; default the one last passed to :meth:`ask`
        """
        first_fit = self.trainer.num_fits == 0
        loss = self.trainer.fit(self.reward_config.initial_epochs if first_fit else None)
        self._labels_since_fit = 0
        self._last_fit_index = self._last_index if index is None else int(index)
        self._last_fit_step = int(env_steps)
        return loss

    # ---- what is compared (overridden by heron's state pairing) ------------------------------------
    def collect_preferences(self, quota: int) -> PreferenceBatch | None:
        """Ask up to ``quota`` never-asked pairs of recent segments, chosen by ``feedback.selection``."""
        fb = self.feedback
        segments, ids, candidates = self.query_pool.window(quota, quota * fb.candidate_factor, self.rng)
        if len(candidates) == 0:
            return None
        chosen = candidates[self.select_pairs(segments, candidates, quota)]
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
        """The trainer's ``rm_*`` metrics (:meth:`~prefrl.reward_model.RewardModelTrainer.metrics`)."""
        return self.trainer.metrics()

    def save(
        self,
        directory: str | Path,
        *,
        env_spec: EnvSpec,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        normalization: Mapping[str, Any] | None = None,
        agent: str | None = None,
    ) -> Path:
        """Write the reward model into ``directory`` as a loadable artefact (``reward_model.pt`` +
        ``reward_model.json``, :func:`prefrl.reward_artifact.save_reward_model`); return the json's path."""
        return save_reward_model(
            self.reward_model,
            Path(directory),
            env_spec=env_spec,
            observation_space=observation_space,
            action_space=action_space,
            normalization=normalization,
            agent=agent,
        )
