"""PEBBLE (Lee et al. 2021): SAC on a reward learned from preferences, with relabelling and unsupervised
pre-training.

Order of operations (as B-Pref's ``train_PEBBLE.py``), in env steps:

1. ``[0, sac.learning_starts)`` - random actions (SB3's warm-up; B-Pref's ``num_seed_steps``);
2. ``[learning_starts, learning_starts + pebble.unsup_steps)`` - **unsupervised pre-training**: SAC's
   gradient steps use the intrinsic reward of each sampled transition instead of the stored one
   (:class:`PEBBLEReplayBuffer`): the distance of its next observation to the ``pebble.knn_k``-th
   nearest stored next observation (:func:`knn_state_entropy`, a particle estimate of the state
   entropy), divided by a running std of those distances. No query is asked;
3. at the end of it, the **first query point**: the segments recorded so far are added to the query pool,
   queries are asked, the reward model is fitted and the whole replay buffer is **relabelled** with it;
   with ``pebble.reset_critic_after_unsup`` the critics are re-initialised (their values were for the
   intrinsic reward) and ``pebble.reset_update`` gradient steps follow at once;
4. every ``pebble.query_interval`` env steps after that, another query point: new segments, queries, a
   refit (:meth:`~prefrl.reward_learning.PreferenceRewardLearner.refit_due`) and, after every refit, a
   relabel of the whole buffer.

Between query points each new transition is stored with the current model's reward, computed per step
by an eager :class:`~prefrl.rollout.LearnedRewardVecEnvWrapper` (``normalize=False``: the ensemble mean,
whose members are each normalised on the labelled data, so relabelled and new rewards are on one scale).

Queries: the budget is planned over the query points (:meth:`PreferenceRewardLearner.plan` with
``feedback.schedule``), or, with ``pebble.queries_per_point`` set, B-Pref's schedule: that many queries at
each point until the budget is spent. Everything else about queries (unique pairs, selection rules,
counters, ensemble, refit policy, metrics) is :class:`~prefrl.reward_learning.PreferenceRewardLearner`'s,
as for rm_ppo.

Metrics (progress.csv): rm_ppo's (``queries_asked``, ``queries_answered``, ``rm_accuracy``,
``rm_new_accuracy``, ``rm_loss``, ``rm_pairs``, ``rm_fit_s``), ``reward_corr`` (Pearson correlation of the
learned and the true reward over the steps since the previous query point, by the model after the
refit), ``rm_relabel_s`` (cumulative seconds spent relabelling the replay buffer; one relabel per fit, so
per relabel it is ``rm_relabel_s / rm_relabels``) and ``rm_relabels``.

Differences from B-Pref: the intrinsic reward is that of the *next* observation (the state the
transition reaches), against the stored next observations, where B-Pref scores the sampled observation
against the stored observations; B-Pref trains its reward model for up to ``reward_update`` epochs per
update (stopping at 97% training accuracy), prefrl's trainer warm-starts ``reward_model.epochs`` epochs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from prefrl.agents.learned_reward import LearnedRewardAgent
from prefrl.agents.off_policy import SACAgent
from prefrl.agents.registry import register_agent
from prefrl.errors import ConfigError
from prefrl.reward_learning import FeedbackConfig, RewardModelConfig, pearson_correlation
from prefrl.reward_model import reward_features
from prefrl.rollout import LearnedRewardVecEnvWrapper, TrajectoryRecorder
from prefrl.spec_utils import ConfigSection

if TYPE_CHECKING:
    from prefrl.evaluation import ProgressHook

__all__ = ["PEBBLEAgent", "PEBBLEConfig", "PEBBLEReplayBuffer", "knn_state_entropy", "query_point_steps"]

#: reference rows per distance block in :func:`knn_state_entropy` (bounds its memory to batch x this)
KNN_CHUNK = 4096
#: buffer rows per batched reward prediction when the replay buffer is relabelled
RELABEL_CHUNK = 65536


@dataclass(frozen=True)
class PEBBLEConfig(ConfigSection):
    """The ``pebble:`` section (B-Pref's names in brackets)."""

    ranges: ClassVar[dict[str, str]] = {
        "unsup_steps": "[0, inf)",
        "knn_k": "[1, inf)",
        "query_interval": "[1, inf)",
        "queries_per_point": "[1, inf)",
        "reset_update": "[0, inf)",
    }

    #: env steps of unsupervised (state-entropy) pre-training after SAC's learning_starts (num_unsup_steps)
    unsup_steps: int = 5000
    #: ``k`` of the k-nearest-neighbour state-entropy estimate (topK)
    knn_k: int = 5
    #: env steps between query points after the first one (num_interact)
    query_interval: int = 5000
    #: queries per query point until the budget is spent (reward_batch); ``None`` = spread the budget over
    #: the query points by ``feedback.schedule``
    queries_per_point: int | None = None
    #: re-initialise the critics after the unsupervised phase: their values were for the intrinsic reward
    reset_critic_after_unsup: bool = True
    #: gradient steps (actor and critics) right after that reset (reset_update)
    reset_update: int = 100


def knn_state_entropy(
    obs: torch.Tensor, reference: torch.Tensor, k: int, chunk_size: int = KNN_CHUNK
) -> torch.Tensor:
    """Distance of each row of ``obs`` to its ``k``-th nearest row of ``reference``, ``[B]``.

    The particle-based state-entropy estimate of PEBBLE's unsupervised phase (the log of it up to
    constants); a row of ``obs`` that is itself in ``reference`` has its own zero distance first, so such
    callers pass ``k + 1``. Euclidean distances are computed in blocks of ``chunk_size`` reference rows,
    keeping the ``k`` smallest so far, so memory stays ``B x (chunk_size + k)``.

    :param obs: ``[B, D]``
    :param reference: ``[N, D]``, ``N >= k``
    :param k: which neighbour, 1-based
    :param chunk_size: reference rows per block
    """
    if obs.dim() != 2 or reference.dim() != 2 or obs.shape[1] != reference.shape[1]:
        shapes = f"{tuple(obs.shape)} and {tuple(reference.shape)}"
        raise ValueError(f"expected [B, D] and [N, D] arrays, got {shapes}")
    if not 1 <= k <= reference.shape[0]:
        raise ValueError(f"k must lie in [1, {reference.shape[0]}] (the reference rows), got {k}")
    nearest = None
    with torch.no_grad():
        for start in range(0, reference.shape[0], chunk_size):
            block = torch.cdist(obs, reference[start : start + chunk_size])
            if nearest is not None:
                block = torch.cat([nearest, block], dim=1)
            nearest = block.topk(min(k, block.shape[1]), dim=1, largest=False).values
    assert nearest is not None
    return nearest[:, k - 1]


def query_point_steps(first: int, interval: int, total_steps: int) -> np.ndarray:
    """Env steps of the query points: ``first, first + interval, ...`` before ``total_steps``.

    :raises ConfigError: the first point is not before the end of training
    """
    first = max(int(first), 1)
    if first >= total_steps:
        raise ConfigError(
            f"agent 'pebble': the first query point (sac.learning_starts + pebble.unsup_steps = {first}) "
            f"must come before the end of training ({total_steps} env steps)"
        )
    return np.arange(first, int(total_steps), int(interval), dtype=np.int64)


class PEBBLEReplayBuffer(ReplayBuffer):
    """SB3's replay buffer, with PEBBLE's intrinsic reward and batched relabelling.

    While :attr:`intrinsic` is set, every sampled batch's rewards are replaced by the state-entropy
    reward of its next observations: :func:`knn_state_entropy` against every stored next observation
    (``knn_k + 1``: the sample itself is one of them), divided by the running std of those distances
    (B-Pref's normalisation). Distances are taken in the space the agent sees (normalised observations
    under ``VecNormalize``).

    With ``num_factors > 0`` the step's ``info["factors"]`` are stored too (``factors``), for reward
    models on ``[obs, factors]``.

    :param knn_k: ``k`` of the state-entropy estimate
    :param num_factors: reward factors per step to store (0: none)
    """

    def __init__(self, *args: Any, knn_k: int = 5, num_factors: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.knn_k = int(knn_k)
        self.num_factors = int(num_factors)
        self.factors = np.zeros((self.buffer_size, self.n_envs, self.num_factors), dtype=np.float32)
        #: replace sampled rewards by the intrinsic reward (the unsupervised phase)
        self.intrinsic = False
        #: running statistics of the k-NN distances (their std scales the intrinsic reward)
        self.entropy_rms = RunningMeanStd(shape=())
        #: batches sampled with intrinsic rewards
        self.intrinsic_batches = 0

    @property
    def num_stored(self) -> int:
        """Rows filled (each row holds one step of every env)."""
        return self.buffer_size if self.full else self.pos

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if self.num_factors:
            self.factors[self.pos] = [info["factors"] for info in infos]
        super().add(obs, next_obs, action, reward, done, infos)

    def stored_next_observations(self) -> np.ndarray:
        """Every stored next observation, ``[rows * n_envs, *obs_shape]`` (raw).

        With ``optimize_memory_usage`` SB3 keeps one array, whose rows are the next observations of the
        rows before them: those (and the newest next observation) are returned.
        """
        n = self.num_stored
        if self.optimize_memory_usage:
            rows = np.arange(1, n + 1) % self.buffer_size
            stored = self.observations[rows[rows != self.pos] if self.full else rows]
        else:
            stored = self.next_observations[:n]
        return stored.reshape(-1, *self.obs_shape)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        samples = super()._get_samples(batch_inds, env)
        if not self.intrinsic:
            return samples
        reference = self.to_torch(self._normalize_obs(self.stored_next_observations(), env)).float()
        next_obs = samples.next_observations.float().reshape(len(batch_inds), -1)
        k = min(self.knn_k + 1, reference.shape[0])
        distances = knn_state_entropy(next_obs, reference.reshape(reference.shape[0], -1), k)
        self.entropy_rms.update(distances.cpu().numpy().astype(np.float64))
        scale = float(np.sqrt(self.entropy_rms.var)) + 1e-8
        self.intrinsic_batches += 1
        return samples._replace(rewards=(distances / scale).reshape(-1, 1).to(samples.rewards.dtype))


class _QueryPointCallback(BaseCallback):
    """Calls :meth:`PEBBLEAgent.on_collected` after every collection (stored transitions, before SAC's
    gradient steps)."""

    def __init__(self, agent: PEBBLEAgent) -> None:
        super().__init__()
        self.agent = agent

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # SB3 calls on_step before it stores the step's transition, on_rollout_end after: a relabel here
        # covers every stored transition, and the gradient steps that follow see it
        self.agent.on_collected(self.num_timesteps)


@register_agent
class PEBBLEAgent(LearnedRewardAgent, SACAgent):
    """SAC on a Bradley-Terry reward ensemble fitted to rater labels, with a relabelled replay buffer and
    k-NN state-entropy pre-training (PEBBLE, Lee et al. 2021).

    Config sections (beyond :class:`~prefrl.agents.off_policy.SACAgent`'s): ``feedback``
    (:class:`~prefrl.reward_learning.FeedbackConfig`), ``reward_model``
    (:class:`~prefrl.reward_learning.RewardModelConfig`) and ``pebble`` (:class:`PEBBLEConfig`). The
    reward learning is a :class:`~prefrl.reward_learning.PreferenceRewardLearner` (:attr:`learner`)
    asked at the query points (see the module docstring); what every agent with such a learner shares is
    :class:`~prefrl.agents.learned_reward.LearnedRewardAgent`'s.
    """

    name = "pebble"
    description = (
        "SAC on a reward model learned from preferences, relabelled buffer, k-NN pre-training (PEBBLE)"
    )
    requires_rater = True
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {
        "feedback": FeedbackConfig,
        "reward_model": RewardModelConfig,
        "pebble": PEBBLEConfig,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: env steps of the query points of the current :meth:`learn`
        self.query_steps = np.zeros(0, dtype=np.int64)
        #: the last query point passed (-1: none yet)
        self.query_index = -1
        #: cumulative seconds spent relabelling the replay buffer, and the relabels done
        self.relabel_s = 0.0
        self.num_relabels = 0

    def read_config(self) -> None:
        super().read_config()
        self.options: PEBBLEConfig = self.sections["pebble"]  # type: ignore[assignment]

    @property
    def replay_buffer(self) -> PEBBLEReplayBuffer:
        buffer = self.model.replay_buffer
        assert isinstance(buffer, PEBBLEReplayBuffer)
        return buffer

    # ---- SACAgent hooks ---------------------------------------------------------------------------
    def wrap_env(self, venv: VecEnv) -> VecEnv:
        """``base envs -> TrajectoryRecorder -> LearnedRewardVecEnvWrapper`` (eager, raw ensemble mean)."""
        self.learner = self.make_learner(venv)
        self.recorder = TrajectoryRecorder(venv, self.segment_length)
        # the log holds the steps since the last query point (for reward_corr); bounded by the interval
        log_capacity = max(1, math.ceil(self.options.query_interval / venv.num_envs))
        self.reward_env = LearnedRewardVecEnvWrapper(
            self.recorder, self.reward_model, normalize=False, log_capacity=log_capacity
        )
        return self.reward_env

    def replay_buffer_class(self) -> type[ReplayBuffer]:
        return PEBBLEReplayBuffer

    def replay_buffer_kwargs(self) -> dict[str, Any]:
        factors = self.env_spec.num_factors if self.rm_config.inputs == "obs_factors" else 0
        return {"knn_k": self.options.knn_k, "num_factors": factors}

    def extra_callbacks(self) -> list[BaseCallback]:
        return [_QueryPointCallback(self)]

    # ---- training ---------------------------------------------------------------------------------
    def learn(self, total_steps: int, query_budget: int, callback: ProgressHook | None = None) -> None:
        self.check_query_budget(query_budget)
        first = int(self.model.learning_starts) + self.options.unsup_steps
        self.query_steps = query_point_steps(first, self.options.query_interval, int(total_steps))
        self.learner.plan(int(query_budget), self.query_steps)
        per_point = self.options.queries_per_point
        if per_point is not None:
            points = len(self.query_steps)
            if per_point * points < query_budget:
                raise ConfigError(
                    f"agent '{self.name}': pebble.queries_per_point {per_point} x {points} query points = "
                    f"{per_point * points} < the query budget {query_budget}: raise "
                    "pebble.queries_per_point, shorten pebble.query_interval or leave it null"
                )
            self.learner.allowance = np.minimum(query_budget, per_point * np.arange(1, points + 1))
        self.query_index = -1
        self.replay_buffer.intrinsic = self.options.unsup_steps > 0
        self.reward_env.clear_log()
        super().learn(total_steps, query_budget, callback)

    def on_collected(self, env_steps: int) -> None:
        """After each collection: at a query point, ask, refit, relabel (and end the unsupervised phase)."""
        index = int(np.searchsorted(self.query_steps, env_steps, side="right")) - 1
        if index <= self.query_index:
            return
        first = self.query_index < 0
        self.query_index = index
        self.replay_buffer.intrinsic = False
        self.learner.add_segments(self.recorder.pop_segments())
        self.learner.ask(index)
        if self.learner.refit_due(index, env_steps):
            self.learner.refit(env_steps, index)
            self.relabel_replay_buffer()
        log = self.reward_env.rollout_log()
        self.reward_env.clear_log()
        if log.features.shape[0]:
            learned = self.reward_model.predict_mean(log.features)
            self.reward_corr = pearson_correlation(learned, log.true_rewards)
        if first and self.options.unsup_steps > 0 and self.options.reset_critic_after_unsup:
            self.reset_critic()
            if self.options.reset_update and self.replay_buffer.num_stored:
                self.model.train(gradient_steps=self.options.reset_update, batch_size=self.model.batch_size)

    def relabel_replay_buffer(self) -> None:
        """Set every stored reward to the current model's, in batched predictions over the buffer."""
        start = time.perf_counter()
        buffer = self.replay_buffer
        n = buffer.num_stored
        rows = max(1, RELABEL_CHUNK // buffer.n_envs)
        for begin in range(0, n, rows):
            end = min(n, begin + rows)
            buffer.rewards[begin:end] = self.reward_model.predict_mean(self.buffer_features(begin, end))
        self.relabel_s += time.perf_counter() - start
        self.num_relabels += 1

    def buffer_features(self, begin: int, end: int) -> np.ndarray:
        """Reward-model inputs of buffer rows ``[begin, end)``, ``[rows, n_envs, D]``.

        SAC stores actions scaled to ``[-1, 1]``; the model was trained on the actions the env applied.
        """
        buffer = self.replay_buffer
        space = self.reward_env.action_space
        assert isinstance(space, spaces.Box)  # SACAgent refuses other action spaces
        applied = self.model.policy.unscale_action(buffer.actions[begin:end])
        actions = np.clip(applied, space.low.reshape(-1), space.high.reshape(-1))
        return reward_features(
            self.rm_config.inputs, buffer.observations[begin:end], actions, buffer.factors[begin:end]
        )

    def reset_critic(self) -> None:
        """Re-initialise both critics' Q-networks (the target a copy) and forget their optimiser state."""
        critic, target = self.model.critic, self.model.critic_target
        for q_net in critic.q_networks:
            for module in q_net.modules():
                if isinstance(module, torch.nn.Linear):
                    module.reset_parameters()
        target.load_state_dict(critic.state_dict())
        critic.optimizer.state.clear()

    # ---- reporting --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "rm_relabel_s": self.relabel_s, "rm_relabels": float(self.num_relabels)}
