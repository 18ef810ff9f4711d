"""HERON (Bukharin et al., "Deep Reinforcement Learning from Hierarchical Weak Preference Feedback").

The rater compares reward factors in order of importance
(:class:`~prefrl.raters.hierarchical.HierarchicalRater`: the most important factor decides when the two
values differ by more than ``sigma_l * std``, else the next one, ...). A reward model is learned from
those labels and PPO optimises it in place of the env reward. All mechanics (recording, query schedule,
incremental refits, reward wrapper, relabelling the finished rollout) are
:class:`~prefrl.agents.rm_ppo.RewardModelPPO`'s; HERON changes what is compared and what the reward
model sees.

Where prefrl follows HERON (public code, abukharin3/HERON) and where it differs:

* **Segment pairs under the run's query budget** (``heron.pairing: segment``, default): the hierarchical
  rater compares segments of ``H`` steps, asked through rm_ppo's query loop (schedule, unique pairs,
  selection, the asked / answered counters), so heron and rm_ppo spend the same ``--queries``.
* **HERON's code mode** (``heron.pairing: state``, *unbudgeted*): each rollout's steps are shuffled into
  minibatches of ``heron.pair_batch_size`` states (HERON: PPO's minibatch, 64) and each state is paired
  with one other random state of its minibatch; the rater's margin ``std(z_l)`` is taken over that
  minibatch, as in HERON's PPO code. Every state of every rollout is paired: the query budget does not
  apply (one query per state pair, ~env steps in all), progress.csv marks the run ``unbudgeted = 1`` and
  reports show it, so such a run is never compared with budgeted agents by accident.
* **Reward-model input** ``[obs, factors]`` (``reward_model.inputs: obs_factors``), as HERON's Pendulum
  code (its robotics code feeds observations only; ``inputs: obs`` reproduces that).
* **Ties dropped or 0.5.** HERON's code drops pairs no level decides; the rater's ``drop_ties`` option
  does the same (``hierarchical:drop_ties=true``); by default prefrl keeps them as 0.5 labels.
* **One network** (``ensemble_size: 1``, MLP [256, 256] ReLU, Adam 1e-3) as in HERON.
* **The reward model replaces the env reward** for PPO, as the paper describes (HERON's PPO code only
  regresses the critic onto the model's output while advantages use the env reward; prefrl follows the
  paper). The learned reward is normalised by a running mean/std (HERON's Pendulum code normalises the
  model output by its mean/std too).
* **Training data.** HERON takes one gradient step per minibatch of the current rollout; prefrl's trainer
  runs ``reward_model.epochs`` epochs over the most recent ``reward_model.max_train_pairs`` labelled
  pairs (default: about two rollouts), warm-started, and holds out a share for ``rm_accuracy``.
* **Queries are counted** as for rm_ppo: asked (every pair put to the rater) and answered; with
  ``hierarchical:drop_ties=true`` dropped ties are asked but not answered. HERON has no budget; by default
  prefrl applies the run's query budget with an equal share per rollout (``feedback.schedule: constant``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from prefrl.agents.registry import register_agent
from prefrl.agents.rm_ppo import RewardModelPPO
from prefrl.errors import SpecError
from prefrl.feedback import Schedule
from prefrl.reward_learning import (
    FeedbackConfig,
    PreferenceRewardLearner,
    RewardInputs,
    RewardModelConfig,
    Selection,
)
from prefrl.spec_utils import ConfigSection
from prefrl.types import PreferenceBatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeronConfig(ConfigSection):
    """The ``heron:`` section."""

    value_names: ClassVar[dict[str, str]] = {"pairing": "pairing"}

    #: segment: segment pairs under the query budget, as rm_ppo | state: single-state pairs inside
    #: minibatches, every state of every rollout (HERON's code; unbudgeted)
    pairing: Literal["segment", "state"] = "segment"
    #: states per pairing minibatch (HERON: PPO's minibatch size); the rater's std is taken over it
    pair_batch_size: int = 64

    def validate(self, where: str) -> None:
        if self.pair_batch_size < 2:
            raise SpecError(f"{where}.pair_batch_size must be >= 2, got {self.pair_batch_size}")


@dataclass(frozen=True)
class HeronFeedbackConfig(FeedbackConfig):
    """rm_ppo's ``feedback:`` section with HERON's defaults: an equal share per rollout, recent segments."""

    #: HERON has no up-front batch
    initial_query_share: float = 0.0
    #: an equal share of the budget per rollout
    schedule: Schedule = "constant"
    #: HERON picks its pairs at random
    selection: Selection = "uniform"
    #: the current rollout only, as in HERON
    pool_rollouts: int = 1


@dataclass(frozen=True)
class HeronRewardModelConfig(RewardModelConfig):
    """rm_ppo's ``reward_model:`` section with HERON's defaults: one [256, 256] network on [obs, factors]."""

    #: [obs, factors] as HERON's Pendulum code (its robotics code: obs only)
    inputs: RewardInputs = "obs_factors"
    #: HERON trains one network
    ensemble_size: int = 1
    #: MLP [256, 256] (ReLU, Adam 1e-3 as rm_ppo's defaults)
    net_arch: tuple[int, ...] = (256, 256)
    #: pairs per minibatch
    batch_size: int = 256
    #: HERON: one pass over the rollout; prefrl: one pass over the window below
    epochs: int = 1
    #: epochs of the first fit
    initial_epochs: int = 5
    #: the most recent ~2 rollouts of state pairs (HERON: the current rollout)
    max_train_pairs: int | None = 8192


class HeronRewardLearner(PreferenceRewardLearner):
    """rm_ppo's reward learner, plus HERON's state pairing (``heron.pairing: state``, unbudgeted).

    With ``pairing: segment`` it is :class:`~prefrl.reward_learning.PreferenceRewardLearner` unchanged.

    :param heron: the ``heron:`` section
    :param kwargs: :class:`~prefrl.reward_learning.PreferenceRewardLearner`'s arguments
    """

    def __init__(self, *args: Any, heron: HeronConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heron = heron

    def queries_due(self, index: int) -> int:
        # state pairing pairs every state of the rollout: HERON's code has no budget
        return self.query_pool.num_segments if self.heron.pairing == "state" else super().queries_due(index)

    def query_rounds(self) -> int:
        return 1 if self.heron.pairing == "state" else super().query_rounds()

    def collect_preferences(self, quota: int) -> PreferenceBatch | None:
        """State pairing: pair the latest rollout's states inside random minibatches, each labelled alone."""
        if self.heron.pairing == "segment":
            return super().collect_preferences(quota)
        pool = self.query_pool.latest()
        n, size = len(pool), self.heron.pair_batch_size
        if n < 2:
            return None
        order = self.rng.permutation(n)
        groups = [order[lo : lo + size] for lo in range(0, n, size)]
        if len(groups) > 1 and len(groups[-1]) < 2:  # a lone last state joins the previous minibatch
            groups[-2] = np.concatenate([groups[-2], groups.pop()])
        # every state of a minibatch starts one pair with another random state of the same minibatch
        local = [np.stack([np.arange(len(g)), _other_index(len(g), self.rng)], axis=1) for g in groups]
        group_id = np.concatenate([np.full(len(p), i) for i, p in enumerate(local)])
        row = np.concatenate([np.arange(len(p)) for p in local])
        pairs, labels = [], []
        for i in np.unique(group_id):
            chosen = local[i][row[group_id == i]]
            # the minibatch is the rater's batch: its margins use the minibatch's std, as in HERON
            prefs = self.rater.label(pool[groups[i]], chosen, self.rng)
            self.query_counter.record(len(chosen), len(prefs))
            pairs.append(groups[i][prefs.pairs])
            labels.append(prefs.labels)
        return PreferenceBatch(segments=pool, pairs=np.concatenate(pairs), labels=np.concatenate(labels))


@register_agent
class HeronAgent(RewardModelPPO):
    """PPO on a reward model learned from HERON's hierarchical factor comparisons (see module docstring).

    Config sections: ``heron`` (:class:`HeronConfig`) plus rm_ppo's ``feedback`` and ``reward_model``,
    whose defaults here follow HERON (inputs ``[obs, factors]``, one [256, 256] network, constant query
    schedule). The rater should be ``hierarchical``; another rater works but is warned about. What is
    compared is its :class:`HeronRewardLearner`'s.

    Its reward model is saved into the run directory as rm_ppo's (:mod:`prefrl.reward_artifact`);
    ``prefrl.load_reward_model`` needs a VecEnv with the reward factors (:func:`prefrl.envs.make_vec_env`).
    """

    name = "heron"
    description = "PPO on a reward model from hierarchical factor comparisons (HERON; rater: hierarchical)"
    requires_rater = True
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {
        "feedback": HeronFeedbackConfig,
        "reward_model": HeronRewardModelConfig,
        "heron": HeronConfig,
    }
    learner_class: ClassVar[type[PreferenceRewardLearner]] = HeronRewardLearner

    def read_config(self) -> None:
        if self.rater is not None and self.rater.name != "hierarchical":
            logger.warning("heron is meant for the hierarchical rater, got '%s'", self.rater.name)
        super().read_config()
        self.heron: HeronConfig = self.sections["heron"]  # type: ignore[assignment]

    @property
    def segment_length(self) -> int:
        # single states are segments of one step
        return 1 if self.heron.pairing == "state" else super().segment_length

    def learner_kwargs(self) -> dict[str, Any]:
        return {"heron": self.heron}

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "unbudgeted": float(self.heron.pairing == "state")}


def _other_index(n: int, rng: np.random.Generator) -> np.ndarray:
    """For each ``i < n`` a uniform random ``j != i`` in ``[0, n)``, ``[n]`` int64."""
    j = rng.integers(n - 1, size=n)
    return (j + (j >= np.arange(n))).astype(np.int64)
