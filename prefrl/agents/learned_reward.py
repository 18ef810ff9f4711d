"""What every SB3 agent shares that learns its reward from queries during training (rm_ppo, heron, pebble).

:class:`LearnedRewardAgent` sits between an SB3 template and such an agent
(``class RewardModelPPO(LearnedRewardAgent, PPOAgent)``): it reads the ``feedback:`` and
``reward_model:`` sections, builds the :class:`~prefrl.reward_learning.PreferenceRewardLearner` for the
training env, counts queries through it, reports its metrics with ``reward_corr`` and saves its reward
model beside the policy. The agent keeps what depends on its algorithm: when it asks (its query points),
how the learned reward reaches the algorithm (:attr:`reward_env`, built in its ``wrap_env``) and how its
data is relabelled after a refit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from prefrl.agents.sb3_agent import SB3Agent
from prefrl.errors import ConfigError
from prefrl.reward_learning import FeedbackConfig, PreferenceRewardLearner, RewardModelConfig, check_configs
from prefrl.reward_model import RewardEnsemble
from prefrl.rollout import LearnedRewardVecEnvWrapper
from prefrl.spec_utils import ConfigSection

__all__ = ["LearnedRewardAgent"]


class LearnedRewardAgent(SB3Agent):
    """An SB3 agent trained on a reward learned from rater queries during training (see module docstring).

    Its :attr:`config_sections` hold ``feedback`` (:class:`~prefrl.reward_learning.FeedbackConfig`) and
    ``reward_model`` (:class:`~prefrl.reward_learning.RewardModelConfig`, or subclasses with other
    defaults); every section is parsed before the env is built (:attr:`sections`). The agent's
    ``wrap_env`` calls :meth:`make_learner` and sets :attr:`reward_env`, the wrapper giving the learned
    reward (its spaces and normalisation are saved with the reward model); :attr:`reward_corr` is the
    agent's latest Pearson correlation of the learned and the true reward.
    """

    name = "learned_reward_template"
    requires_rater = True
    #: the reward learner :meth:`make_learner` builds (a subclass changes what is compared by its own)
    learner_class: ClassVar[type[PreferenceRewardLearner]] = PreferenceRewardLearner

    learner: PreferenceRewardLearner
    reward_env: LearnedRewardVecEnvWrapper

    # ---- configuration ----------------------------------------------------------------------------
    def read_config(self) -> None:
        """Parse every config section (:attr:`sections`, :attr:`feedback`, :attr:`rm_config`) and check
        that ``feedback`` and ``reward_model`` work together, then the template's checks."""
        #: every typed config section, by key
        self.sections: dict[str, ConfigSection] = self.parse_sections(self.config)
        self.feedback: FeedbackConfig = self.sections["feedback"]  # type: ignore[assignment]
        self.rm_config: RewardModelConfig = self.sections["reward_model"]  # type: ignore[assignment]
        check_configs(self.feedback, self.rm_config)
        #: Pearson correlation of the learned and the true reward on the latest data (NaN: none yet)
        self.reward_corr = float("nan")
        super().read_config()

    @property
    def segment_length(self) -> int:
        """Steps per queried segment ``H``."""
        h = self.feedback.segment_length
        return self.env_spec.segment_length if h is None else h

    # ---- the learner --------------------------------------------------------------------------------
    def learner_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of :attr:`learner_class` (none by default)."""
        return {}

    def make_learner(self, venv: VecEnv) -> PreferenceRewardLearner:
        """:attr:`learner_class` for the base training envs ``venv`` (their flat observation and action
        sizes, the env's reward factors), seeded with the run seed and drawing from the agent's generator."""
        assert self.rater is not None  # requires_rater: Agent.__init__ refuses to build one without
        return self.learner_class(
            self.feedback,
            self.rm_config,
            obs_dim=int(np.prod(venv.observation_space.shape)),
            act_dim=int(np.prod(venv.action_space.shape)),
            num_factors=self.env_spec.num_factors,
            rater=self.rater,
            seed=self.seed,
            rng=self.rng,  # one stream with the agent's: the same draws as before the learner existed
            device=self.device,
            **self.learner_kwargs(),
        )

    @property
    def reward_model(self) -> RewardEnsemble:
        """The learner's Bradley-Terry ensemble."""
        return self.learner.reward_model

    def check_query_budget(self, query_budget: int) -> None:
        """:raises ConfigError: a query budget <= 0 (the reward is learned from queries)"""
        if query_budget <= 0:
            raise ConfigError(
                f"agent '{self.name}' learns its reward from preference queries: the query budget must be "
                f"> 0, got {query_budget}"
            )

    # ---- query accounting and reporting -----------------------------------------------------------
    @property
    def num_queries(self) -> int:
        """Queries counted against the budget (``feedback.budget``: asked or answered)."""
        return self.learner.num_queries

    @property
    def queries_asked(self) -> int:
        return self.learner.queries_asked

    @property
    def queries_answered(self) -> int:
        return self.learner.queries_answered

    def metrics(self) -> dict[str, float]:
        return {**self.learner.metrics(), "reward_corr": self.reward_corr}

    def save(self, path: str | Path) -> None:
        """The policy (see :meth:`SB3Agent.save`) and, next to it, the reward model as a loadable artefact
        (``reward_model.pt`` + ``reward_model.json``, see :mod:`prefrl.reward_artifact`)."""
        super().save(path)
        self.learner.save(
            Path(path).parent,
            env_spec=self.env_spec,
            observation_space=self.reward_env.observation_space,
            action_space=self.reward_env.action_space,
            normalization=self.reward_env.normalization_state(),
            agent=self.name,
        )
