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

Steps 2 and 3 (and everything below up to the metrics) are a
:class:`~prefrl.reward_learning.PreferenceRewardLearner`, which every agent that learns its reward from
queries during training shares; this module adds PPO's side (1 and 4) and asks the learner once per
rollout.

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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.vec_env import VecEnv

from prefrl.agents.learned_reward import LearnedRewardAgent
from prefrl.agents.on_policy import PPOAgent
from prefrl.agents.registry import register_agent
from prefrl.feedback import QueryCounter, QueryPool
from prefrl.feedback import Schedule as Schedule  # re-exported, with the config names below

# the config sections and their value types were defined here before prefrl.reward_learning: the
# redundant aliases re-export them for code that imports them from here
from prefrl.reward_learning import SELECTIONS as SELECTIONS
from prefrl.reward_learning import FeedbackConfig as FeedbackConfig
from prefrl.reward_learning import RewardInputs as RewardInputs
from prefrl.reward_learning import RewardModelConfig as RewardModelConfig
from prefrl.reward_learning import Selection as Selection
from prefrl.reward_learning import pearson_correlation
from prefrl.reward_model import RewardModelTrainer
from prefrl.rollout import LearnedRewardVecEnvWrapper, RelabelRolloutBuffer, TrajectoryRecorder
from prefrl.spec_utils import ConfigSection
from prefrl.types import PreferenceBatch, SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.evaluation import ProgressHook
    from prefrl.raters.base import Rater

logger = logging.getLogger(__name__)


@register_agent
class RewardModelPPO(LearnedRewardAgent, PPOAgent):
    """PPO on a Bradley-Terry reward-model ensemble refitted from rater queries on a schedule.

    Config sections (beyond :class:`~prefrl.agents.on_policy.PPOAgent`'s): ``feedback``
    (:class:`~prefrl.reward_learning.FeedbackConfig`) and ``reward_model``
    (:class:`~prefrl.reward_learning.RewardModelConfig`). The reward learning (schedule, unique pairs,
    selection, counters, ensemble, refits) is a :class:`~prefrl.reward_learning.PreferenceRewardLearner`
    (:attr:`learner`, of :attr:`learner_class`) asked at the end of every rollout; what every agent with
    such a learner shares is :class:`~prefrl.agents.learned_reward.LearnedRewardAgent`'s, and this class
    adds PPO's side: recording, the deferred reward wrapper and relabelling the finished rollout. With
    observation normalisation (``normalize``), the reward normalisation of ``VecNormalize`` is switched
    off: the learned reward is already normalised by the reward wrapper.
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
        super().__init__(env_spec, config, rater, seed, device)
        assert self.model.rollout_buffer is not None
        buffer = self.model.rollout_buffer
        assert isinstance(buffer, RelabelRolloutBuffer)
        # attached, not passed to PPO, so the hook is never pickled with the model
        buffer.relabel_hook = self._on_rollout_complete
        #: rollouts completed in the current :meth:`learn` (the learner's query point index)
        self._rollout = 0
        #: the reward-model version whose outputs the reward normaliser's statistics describe
        self._normalized_version = -1

    # ---- PPOAgent hooks ---------------------------------------------------------------------------
    def wrap_env(self, venv: VecEnv) -> VecEnv:
        """``base envs -> TrajectoryRecorder -> LearnedRewardVecEnvWrapper`` (+ normalisation above)."""
        self.learner = self.make_learner(venv)
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

    def vec_normalize_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        # the learned reward is normalised by the wrapper; VecNormalize must not rescale it again
        # (relabelling a rollout assumes the buffer holds the wrapper's rewards)
        return {**super().vec_normalize_kwargs(options), "norm_reward": False}

    # ---- the learner's parts, as before it was one ------------------------------------------------
    @property
    def trainer(self) -> RewardModelTrainer:
        return self.learner.trainer

    @property
    def query_pool(self) -> QueryPool:
        return self.learner.query_pool

    @property
    def query_counter(self) -> QueryCounter:
        return self.learner.query_counter

    @property
    def _allowance(self) -> np.ndarray:
        return self.learner.allowance

    # ---- training ---------------------------------------------------------------------------------
    def learn(self, total_steps: int, query_budget: int, callback: ProgressHook | None = None) -> None:
        self.check_query_budget(query_budget)
        rollout_size = int(self.model.n_steps) * self.venv.num_envs
        num_rollouts = max(1, math.ceil(int(total_steps) / rollout_size))
        self.learner.plan(int(query_budget), rollout_size * np.arange(1, num_rollouts + 1))
        self._rollout = 0
        self.reward_env.clear_log()
        super().learn(total_steps, query_budget, callback)

    def _on_rollout_complete(self, buffer: RelabelRolloutBuffer) -> np.ndarray:
        """Relabel hook: query, refit and return the change of the rollout's rewards, ``[T, n_envs]``."""
        self.learner.add_segments(self.recorder.pop_segments())
        self.learner.ask(self._rollout)
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
        if self.learner.refit_due(self._rollout, self.model.num_timesteps):
            self.learner.refit(self.model.num_timesteps, self._rollout)
        self._rollout += 1
        learned = self.reward_model.predict_mean(log.features)  # [T, n_envs]
        self.reward_corr = pearson_correlation(learned, log.true_rewards)
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

    # ---- preference collection (the learner's; heron's learner pairs states) ----------------------
    def collect_preferences(self, quota: int) -> PreferenceBatch | None:
        """Ask up to ``quota`` queries now (:meth:`PreferenceRewardLearner.collect_preferences`)."""
        return self.learner.collect_preferences(quota)

    def select_pairs(self, segments: SegmentBatch, candidates: np.ndarray, quota: int) -> np.ndarray:
        """Indices of the ``quota`` candidates to ask (:meth:`PreferenceRewardLearner.select_pairs`)."""
        return self.learner.select_pairs(segments, candidates, quota)
