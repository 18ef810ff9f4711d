"""HERON (Bukharin et al., "Deep Reinforcement Learning from Hierarchical Weak Preference Feedback").

The rater compares reward factors in order of importance
(:class:`~prefrl.raters.hierarchical.HierarchicalRater`: the most important factor decides when the two
values differ by more than ``sigma_l * std``, else the next one, ...). A reward model is learned from
those labels and PPO optimises it in place of the env reward. All mechanics (recording, query schedule,
incremental refits, reward wrapper, relabelling the finished rollout) are
:class:`~prefrl.agents.rm_ppo.RewardModelPPO`'s; HERON changes what is compared and what the reward
model sees.

Where prefrl follows HERON (public code, abukharin3/HERON) and where it differs:

* **Pairs of single states** (``heron.pairing: state``, default), as in HERON's code: each rollout's
  steps are shuffled into minibatches of ``heron.pair_batch_size`` states (HERON: PPO's minibatch, 64),
  and each state is paired with one other random state of its minibatch. The rater's margin
  ``std(z_l)`` is taken over that minibatch, as in HERON's PPO code. ``heron.pairing: segment`` compares
  segments of ``H`` steps instead (uniform / disagreement selection of rm_ppo).
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
* **Queries are counted**: every labelled state pair is one query (ties kept as 0.5 count; dropped ties
  do not, as for every rater). HERON has no budget; prefrl applies the run's query budget with the same
  schedule as rm_ppo (``feedback.schedule: constant`` by default: an equal share per rollout). With a
  budget of at least the env-step budget every state of every rollout is paired once, as in HERON.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from prefrl.agents import register_agent
from prefrl.agents.base import Schema
from prefrl.agents.rm_ppo import FEEDBACK_DEFAULTS, REWARD_MODEL_DEFAULTS, RewardModelPPO
from prefrl.errors import SpecError
from prefrl.spec_utils import suggest
from prefrl.types import PreferenceBatch, SegmentBatch

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.raters.base import Rater

logger = logging.getLogger(__name__)

#: defaults of the ``heron:`` config section
HERON_DEFAULTS: dict[str, Any] = {
    "pairing": "state",  # state: single-state pairs inside minibatches (HERON's code) | segment
    "pair_batch_size": 64,  # states per pairing minibatch (HERON: PPO's minibatch size)
}

PAIRINGS = ("state", "segment")


@register_agent
class HeronAgent(RewardModelPPO):
    """PPO on a reward model learned from HERON's hierarchical factor comparisons (see module docstring).

    Config sections: ``heron`` (:data:`HERON_DEFAULTS`) plus rm_ppo's ``feedback`` and ``reward_model``,
    whose defaults here follow HERON (inputs ``[obs, factors]``, one [256, 256] network, constant query
    schedule). The rater should be ``hierarchical``; another rater works but is warned about.
    """

    name = "heron"
    requires_rater = True
    config_keys: ClassVar[Schema] = {**RewardModelPPO.config_keys, "heron": tuple(HERON_DEFAULTS)}
    feedback_defaults: ClassVar[dict[str, Any]] = {
        **FEEDBACK_DEFAULTS,
        "initial_query_share": 0.0,
        "schedule": "constant",
        "selection": "uniform",
        "pool_rollouts": 1,
    }
    reward_model_defaults: ClassVar[dict[str, Any]] = {
        **REWARD_MODEL_DEFAULTS,
        "inputs": "obs_factors",
        "ensemble_size": 1,
        "net_arch": [256, 256],
        "batch_size": 256,
        "epochs": 1,
        "initial_epochs": 5,
        "max_train_pairs": 8192,
    }

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.heron = {**HERON_DEFAULTS, **dict(config.get("heron") or {})}
        if self.heron["pairing"] not in PAIRINGS:
            raise SpecError(
                f"heron.pairing: unknown pairing '{self.heron['pairing']}'"
                f"{suggest(str(self.heron['pairing']), PAIRINGS)}; one of {', '.join(PAIRINGS)}"
            )
        if int(self.heron["pair_batch_size"]) < 2:
            raise SpecError(f"heron.pair_batch_size must be >= 2, got {self.heron['pair_batch_size']}")
        if rater is not None and rater.name != "hierarchical":
            logger.warning("heron is meant for the hierarchical rater, got '%s'", rater.name)
        super().__init__(env_spec, config, rater, seed, device)

    @property
    def segment_length(self) -> int:
        # single states are segments of one step
        return 1 if self.heron["pairing"] == "state" else super().segment_length

    def collect_preferences(self, pool: SegmentBatch, quota: int) -> PreferenceBatch | None:
        """State pairing: pair states inside random minibatches; label each minibatch on its own."""
        if self.heron["pairing"] == "segment":
            return super().collect_preferences(pool, quota)
        n, size = len(pool), int(self.heron["pair_batch_size"])
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
        if len(group_id) > quota:  # over budget: a random subset of the pairs
            keep = np.sort(self.rng.choice(len(group_id), size=quota, replace=False))
            group_id, row = group_id[keep], row[keep]
        assert self.rater is not None
        pairs, labels = [], []
        for i in np.unique(group_id):
            chosen = local[i][row[group_id == i]]
            # the minibatch is the rater's batch: its margins use the minibatch's std, as in HERON
            prefs = self.rater.label(pool[groups[i]], chosen, self.rng)
            pairs.append(groups[i][prefs.pairs])
            labels.append(prefs.labels)
        return PreferenceBatch(segments=pool, pairs=np.concatenate(pairs), labels=np.concatenate(labels))


def _other_index(n: int, rng: np.random.Generator) -> np.ndarray:
    """For each ``i < n`` a uniform random ``j != i`` in ``[0, n)``, ``[n]`` int64."""
    j = rng.integers(n - 1, size=n)
    return (j + (j >= np.arange(n))).astype(np.int64)
