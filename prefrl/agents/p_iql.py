"""P-IQL: IQL on a Bradley-Terry reward model fitted to an offline preference dataset (CPL's baseline).

The baseline of Hejna et al. (ICLR 2024, *Contrastive Preference Learning*): learn a reward from the
dataset's labelled pairs, then run implicit Q-learning (:mod:`prefrl.agents.iql`; Kostrikov et al. 2022)
on the dataset's transitions relabelled with it. Same datasets, budgets, policy and evaluation as ``cpl``
and ``bc`` (:mod:`prefrl.agents.offline`).

Two phases:

1. **Reward model** (before the gradient-step loop; it does not count towards ``--steps``): a
   :class:`~prefrl.reward_model.RewardEnsemble` fitted by
   :class:`~prefrl.reward_model.RewardModelTrainer` (the Bradley-Terry loss on segment sums) for
   ``reward_model.epochs`` epochs over the labelled pairs, ``holdout_share`` of them held out for
   ``rm_accuracy``.
2. **IQL** (``--steps`` gradient steps): every step of every dataset segment becomes a transition
   ``(s_t, a_t, r_hat_t, s_{t+1}, done_t)``, where ``s_{t+1}`` is the next step's observation inside the
   segment and the segment's ``next_obs`` after its last step, and ``r_hat`` the ensemble-mean reward,
   standardised over the dataset's transitions. Each gradient step updates V, the twin Q and its target
   (:meth:`~prefrl.agents.iql.IQLCritic.update`) and then the policy by advantage-weighted regression.

Where it differs from the CPL authors' P-IQL code (jhejna/cpl, ``research/algs/piql.py``):

* they train the reward net during the first 50k of the 500k steps while IQL already runs on it; here
  the reward model is fitted first, so IQL sees one fixed reward;
* their minibatch is whole segment pairs (96 pairs x 2 x 64 steps); here ``offline.batch_size`` counts
  transitions drawn uniformly (the IQL paper's 256);
* their reward is not normalised; here it is standardised (the IQL paper rescales rewards too);
* a ``done`` inside a segment stops bootstrapping. The datasets only record ``terminated or truncated``,
  so a time-limit end would count as terminal; the built-in datasets' segments never reach the time
  limit (Pendulum: 3 x 64 of 200 steps, HalfCheetah: 15 x 64 of 1000).

``--queries`` cuts the labelled pairs the reward model learns from (as ``cpl``); IQL still learns from the
transitions of every segment in the dataset, labelled or not (the reward model labels them).

Defaults: the CPL authors' MetaWorld ``piql.yaml`` (expectile 0.7, beta 1/0.3333 = 3, Adam 3e-4 for
everything, [512, 512] ReLU networks, dropout 0.25 on the policy only, a cosine schedule of the policy's
learning rate, one reward network on (obs, act), batch 96 pairs) and the IQL paper (gamma 0.99, Polyak
0.005, weights clipped at 100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from prefrl.agents.iql import IQLCritic, awr_policy_loss, awr_weights
from prefrl.agents.offline import OfflineAgent
from prefrl.agents.registry import register_agent
from prefrl.datasets import PreferenceDataset
from prefrl.errors import SpecError
from prefrl.networks import activation as activation_class
from prefrl.reward_artifact import save_reward_model
from prefrl.reward_learning import pearson_correlation
from prefrl.reward_model import RewardEnsemble, RewardModelTrainer, feature_dim
from prefrl.spec_utils import ConfigSection
from prefrl.types import SegmentBatch

__all__ = [
    "IQLConfig",
    "PIQLAgent",
    "PIQLRewardModelConfig",
    "relabel_segments",
    "segment_transitions",
]

#: segments per forward pass when relabelling (bounds the activations of a [512, 512] reward net)
_RELABEL_CHUNK = 256


@dataclass(frozen=True)
class PIQLRewardModelConfig(ConfigSection):
    """The ``reward_model:`` section of ``p_iql``: the Bradley-Terry model fitted before IQL."""

    value_names: ClassVar[dict[str, str]] = {"inputs": "input mode"}
    ranges: ClassVar[dict[str, str]] = {
        "learning_rate": "(0, inf)",
        "weight_decay": "[0, inf)",
        "net_arch": "[1, inf)",
        "holdout_share": "[0, 1)",
    }

    #: what the model sees per step: obs_act (CPL's reward net) | obs
    inputs: Literal["obs_act", "obs"] = "obs_act"
    #: ensemble members ``K`` (CPL: 1); the reward is the mean of the members' standardised rewards
    ensemble_size: int = 1
    #: hidden layer sizes of each member
    net_arch: tuple[int, ...] = (512, 512)
    #: hidden activation (a name of prefrl.networks.ACTIVATIONS)
    activation: str = "relu"
    #: Adam learning rate
    learning_rate: float = 3.0e-4
    #: Adam L2 penalty
    weight_decay: float = 0.0
    #: labelled pairs per minibatch
    batch_size: int = 96
    #: epochs over the labelled pairs, all before the IQL steps
    epochs: int = 20
    #: share of the labelled pairs held out for rm_accuracy
    holdout_share: float = 0.1
    #: each member trains on its own (Poisson) bootstrap resample (ensembles only)
    bootstrap: bool = True

    def validate(self, where: str) -> None:
        for key in ("ensemble_size", "batch_size", "epochs"):
            if getattr(self, key) < 1:
                raise SpecError(f"{where}.{key} must be >= 1, got {getattr(self, key)}")
        activation_class(self.activation, f"{where}.activation")


@dataclass(frozen=True)
class IQLConfig(ConfigSection):
    """The ``iql:`` section: implicit Q-learning on the relabelled transitions."""

    value_names: ClassVar[dict[str, str]] = {"policy_lr_schedule": "schedule"}
    ranges: ClassVar[dict[str, str]] = {
        "expectile": "(0, 1)",
        "beta": "(0, inf)",
        "max_weight": "(0, inf)",
        "gamma": "[0, 1)",
        "polyak": "(0, 1]",
        "q_learning_rate": "(0, inf)",
        "v_learning_rate": "(0, inf)",
        "net_arch": "[1, inf)",
    }

    #: expectile ``tau`` of the value loss (IQL and CPL: 0.7)
    expectile: float = 0.7
    #: inverse temperature of the AWR weights ``exp(beta * A)`` (IQL: 3; CPL's 1 / 0.3333)
    beta: float = 3.0
    #: AWR weights are clipped at this value
    max_weight: float = 100.0
    #: discount
    gamma: float = 0.99
    #: Polyak rate of the target critics
    polyak: float = 0.005
    #: Adam learning rate of the twin Q (the policy's is offline.learning_rate)
    q_learning_rate: float = 3.0e-4
    #: Adam learning rate of V
    v_learning_rate: float = 3.0e-4
    #: hidden layer sizes of every critic network (twin Q and V)
    net_arch: tuple[int, ...] = (512, 512)
    #: the policy's learning rate over the steps: cosine (decays to 0, as IQL and CPL) | constant
    policy_lr_schedule: Literal["cosine", "constant"] = "cosine"


def segment_transitions(segments: SegmentBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The transitions of ``N`` segments of ``H`` steps, flattened segment-major: ``N * H`` rows.

    :returns: ``obs [N*H, obs_dim]``, ``act [N*H, act_dim]`` (env units), ``next_obs [N*H, obs_dim]``
        (``obs_{t+1}`` inside a segment, the segment's ``next_obs`` after its last step) and
        ``done [N*H]`` float32.
    """
    obs, act = segments.obs, segments.act
    next_obs = np.concatenate([obs[:, 1:], segments.next_obs[:, None]], axis=1)
    obs_dim = obs.shape[-1]
    return (
        obs.reshape(-1, obs_dim).astype(np.float32),
        act.reshape(-1, act.shape[-1]).astype(np.float32),
        next_obs.reshape(-1, obs_dim).astype(np.float32),
        segments.dones.reshape(-1).astype(np.float32),
    )


def relabel_segments(ensemble: RewardEnsemble, segments: SegmentBatch) -> np.ndarray:
    """The ensemble-mean reward of every step of ``segments``, ``[N, H]`` float32 (not standardised)."""
    chunks = [
        ensemble.predict_mean(ensemble.features(segments[lo : lo + _RELABEL_CHUNK]))
        for lo in range(0, len(segments), _RELABEL_CHUNK)
    ]
    return np.concatenate(chunks).astype(np.float32)


@register_agent
class PIQLAgent(OfflineAgent):
    """IQL on a Bradley-Terry reward model fitted to an offline preference dataset (module docstring).

    Config sections beyond :class:`~prefrl.agents.offline.OfflineAgent`'s: ``reward_model``
    (:class:`PIQLRewardModelConfig`) and ``iql`` (:class:`IQLConfig`). ``offline.batch_size`` counts
    transitions, ``offline.learning_rate`` is the policy's. Saving writes the policy (as every offline
    agent) and the reward model next to it (``reward_model.pt`` / ``.json``, :mod:`prefrl.reward_artifact`;
    its saved output normalisation reproduces the standardised reward IQL trained on).
    """

    name = "p_iql"
    description = (
        "offline IQL on a Bradley-Terry reward model fitted to an oracle dataset (CPL's P-IQL baseline)"
    )
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {
        **OfflineAgent.config_sections,
        "reward_model": PIQLRewardModelConfig,
        "iql": IQLConfig,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rm_config: PIQLRewardModelConfig = self.sections["reward_model"]  # type: ignore[assignment]
        self.iql: IQLConfig = self.sections["iql"]  # type: ignore[assignment]
        obs_dim = int(np.prod(self.env_spec.observation_space.shape))
        act_dim = int(np.prod(self.env_spec.action_space.shape))
        rm = self.rm_config
        self.reward_model = RewardEnsemble(
            inputs=rm.inputs,
            input_dim=feature_dim(rm.inputs, obs_dim, act_dim, self.env_spec.num_factors),
            num_members=rm.ensemble_size,
            net_arch=list(rm.net_arch),
            activation=rm.activation,
            seed=self.seed,
        )
        self.trainer = RewardModelTrainer(
            self.reward_model,
            learning_rate=rm.learning_rate,
            batch_size=rm.batch_size,
            epochs=rm.epochs,
            holdout_share=rm.holdout_share,
            bootstrap=rm.bootstrap,
            weight_decay=rm.weight_decay,
            rng=np.random.default_rng(self.seed),
        )
        self.critic = IQLCritic(
            obs_dim,
            act_dim,
            net_arch=self.iql.net_arch,
            activation=activation_class(
                (self.config.get("policy_kwargs") or {}).get("activation_fn", "relu"),
                "policy_kwargs.activation_fn",
            ),
            expectile=self.iql.expectile,
            gamma=self.iql.gamma,
            polyak=self.iql.polyak,
            q_learning_rate=self.iql.q_learning_rate,
            v_learning_rate=self.iql.v_learning_rate,
        ).to(self.device)
        #: mean and std of the ensemble-mean reward over the dataset's transitions (standardisation)
        self.reward_mean, self.reward_std = 0.0, 1.0
        self.num_transitions = 0
        self._rm_scalars: dict[str, float] = {}

    # ---- phase 1: the reward model --------------------------------------------------------------
    def fit_reward_model(self, data: PreferenceDataset) -> dict[str, float]:
        """Fit the reward model on ``data``'s labelled pairs; return its metrics (``rm_accuracy`` held out,
        ``rm_train_accuracy``, ``rm_loss``, ``rm_fit_s``). A second call refits on the pairs it holds."""
        if self.trainer.num_pairs == 0:
            self.trainer.add(data.preferences)
        self.trainer.fit()
        metrics = self.trainer.metrics()
        return {
            "rm_accuracy": metrics["rm_accuracy"],
            "rm_train_accuracy": self.trainer.train_accuracy,
            "rm_loss": metrics["rm_loss"],
            "rm_fit_s": metrics["rm_fit_s"],
        }

    # ---- OfflineAgent hooks -----------------------------------------------------------------------
    def setup_data(self, data: PreferenceDataset) -> int:
        """Fit the reward model, relabel every segment step, build the transitions; return their number."""
        self._rm_scalars = self.fit_reward_model(data)
        segments = data.segments
        learned = relabel_segments(self.reward_model, segments)
        self.reward_mean = float(learned.mean())
        self.reward_std = float(max(learned.std(), 1e-6))
        # how well the learned reward tracks the true one on the data IQL sees (a diagnostic only)
        self._rm_scalars["reward_corr"] = pearson_correlation(learned, segments.reward)
        obs, act, next_obs, done = segment_transitions(segments)
        self._obs, self._next_obs = self.to_tensor(obs), self.to_tensor(next_obs)
        self._act = self.normalised_actions(act)
        self._reward = self.to_tensor((learned.reshape(-1) - self.reward_mean) / self.reward_std)
        self._done = self.to_tensor(done)
        self.num_transitions = len(done)
        if self.offline.normalize_obs:
            self.critic.set_obs_normalisation(self.policy.obs_mean, self.policy.obs_std)
        return self.num_transitions

    def learning_rate_scale(self, step: int, total_steps: int) -> float:
        """The policy's schedule: the warm-up of :class:`OfflineAgent` times a cosine decay (if chosen)."""
        scale = super().learning_rate_scale(step, total_steps)
        if self.iql.policy_lr_schedule == "cosine":
            scale *= 0.5 * (1.0 + math.cos(math.pi * step / max(total_steps, 1)))
        return scale

    def compute_loss(self, index: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """One critic update (V, Q, target) on the minibatch, then the policy's AWR loss on it."""
        obs, act = self._obs[index], self._act[index]
        advantage, scalars = self.critic.update(
            obs, act, self._reward[index], self._next_obs[index], self._done[index]
        )
        log_prob = self.policy.log_prob(obs, act)
        loss = awr_policy_loss(log_prob, advantage, self.iql.beta, self.iql.max_weight)
        weights = awr_weights(advantage, self.iql.beta, self.iql.max_weight)
        return loss, {
            **scalars,
            "policy_loss": float(loss.detach()),
            "awr_weight_mean": float(weights.mean()),
            "awr_clipped": float((weights >= self.iql.max_weight * (1 - 1e-6)).float().mean()),
            # effective sample size of the weighted batch, as a share of it (1: plain BC; near 0: a few
            # transitions dominate the policy's update)
            "awr_ess": float(weights.sum().square() / (len(weights) * weights.square().sum())),
            **self._rm_scalars,
        }

    # ---- saving -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """The policy (``policy.zip`` + ``policy.json``) and the reward model beside it, with the
        standardisation IQL used as its output normalisation."""
        super().save(path)
        if self.trainer.num_fits == 0:
            return  # nothing learned yet: no reward model to save
        save_reward_model(
            self.reward_model,
            Path(path).parent,
            env_spec=self.env_spec,
            observation_space=self.env_spec.observation_space,
            action_space=self.env_spec.action_space,
            normalization={
                "normalize": True,
                "epsilon": 0.0,
                "mean": self.reward_mean,
                "var": self.reward_std**2,
                "count": float(self.num_transitions),
            },
            agent=self.name,
        )
