"""Bradley-Terry reward models learned from preferences, their trainer, and the SB3 reward wrapper.

Pieces (each usable on its own):

* :func:`reward_features` - the per-step reward-model input: ``obs``, ``obs_act`` (Christiano et al.) or
  ``obs_factors`` (HERON: observation and raw reward factors).
* :class:`RewardNet` - ``K`` independent MLPs evaluated in one batched pass (``[K, B, D] -> [K, B]``).
* :class:`RewardEnsemble` - a :class:`RewardNet` with an input normaliser; predicts per-step rewards
  ``[K, N, H]``, segment returns ``[K, N]`` and preference probabilities, and their mean and spread
  (disagreement) across members.
* :func:`bradley_terry_loss` - the loss, a pure function:
  ``BCE-with-logits(R(seg1) - R(seg2), y)`` with soft labels ``y = P(seg1 preferred)`` (ties 0.5).
* :class:`RewardModelTrainer` - holds the labelled pairs, refits the ensemble incrementally (a few
  warm-started epochs on the growing data set; each member on its own bootstrap resample), holds out a
  share of the pairs and reports held-out accuracy.

The VecEnv wrapper that substitutes the learned reward for the env reward during training is
:class:`prefrl.rollout.LearnedRewardVecEnvWrapper`; a trained ensemble is saved into a run directory and
loaded back (as such a wrapper, for any SB3 algorithm) by :mod:`prefrl.reward_artifact`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prefrl.errors import SpecError
from prefrl.networks import activation as activation_class
from prefrl.networks import numpy_activation
from prefrl.spec_utils import suggest
from prefrl.types import PreferenceBatch, SegmentBatch

__all__ = [
    "REWARD_INPUTS",
    "RewardEnsemble",
    "RewardModelTrainer",
    "RewardNet",
    "bradley_terry_loss",
    "preference_accuracy",
    "reward_features",
]

#: most stored segments the input and member normalisers are estimated on at a refit. 128 segments are
#: thousands of steps (6,400 at H = 50), plenty for a mean and a std per member; the member normaliser's
#: forward pass over 512 of them was a third of a refit at 250 labels (Pendulum, one epoch)
NORMALIZATION_SEGMENTS = 128
#: what the reward model sees at each step
REWARD_INPUTS = ("obs", "obs_act", "obs_factors")


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def check_inputs(inputs: str) -> str:
    """Return ``inputs`` if it names a known input mode, else raise :class:`SpecError` with a hint."""
    if inputs not in REWARD_INPUTS:
        raise SpecError(
            f"reward_model.inputs: unknown input mode '{inputs}'{suggest(str(inputs), REWARD_INPUTS)}; "
            f"one of {', '.join(REWARD_INPUTS)}"
        )
    return inputs


def reward_features(inputs: str, obs: np.ndarray, act: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Per-step reward-model input, float32 ``[..., D]``.

    :param inputs: one of :data:`REWARD_INPUTS`
    :param obs: observations ``s_t`` before the step, ``[..., obs_dim]``
    :param act: actions ``a_t``, ``[..., act_dim]``
    :param factors: raw reward factors of the step, ``[..., F]``
    """
    check_inputs(inputs)
    parts = [obs]
    if inputs == "obs_act":
        parts.append(act)
    elif inputs == "obs_factors":
        parts.append(factors)
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=-1)


def feature_dim(inputs: str, obs_dim: int, act_dim: int, num_factors: int) -> int:
    """``D`` of :func:`reward_features` for the given dimensions."""
    check_inputs(inputs)
    return obs_dim + {"obs": 0, "obs_act": act_dim, "obs_factors": num_factors}[inputs]


def segment_features(inputs: str, segments: SegmentBatch) -> np.ndarray:
    """:func:`reward_features` of every step of every segment, ``[N, H, D]``."""
    return reward_features(inputs, segments.obs, segments.act, segments.factors)


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


class EnsembleLinear(nn.Module):
    """``K`` independent linear layers applied in one batched matmul: ``[K, B, in] -> [K, B, out]``."""

    def __init__(self, num_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """PyTorch's default ``nn.Linear`` init, each member from its own generator."""
        fan_in = self.weight.shape[1]
        bound = 1.0 / np.sqrt(fan_in)
        with torch.no_grad():
            for k, gen in enumerate(generators):
                self.weight[k].uniform_(-bound, bound, generator=gen)
                self.bias[k].uniform_(-bound, bound, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class RewardNet(nn.Module):
    """``K`` MLP reward functions ``r_k(x)`` evaluated together (one member when ``num_members=1``).

    :param input_dim: ``D``, size of the per-step input
    :param net_arch: hidden layer sizes
    :param activation: an activation name of :data:`prefrl.networks.ACTIVATIONS` (``"relu"``, ``"tanh"``, ...)
    :param num_members: ``K``
    :param seed: member ``k`` is initialised from a torch generator seeded ``seed * 1000 + k``, so members
        differ and the same seed gives the same networks
    """

    def __init__(
        self,
        input_dim: int,
        net_arch: Sequence[int] = (64, 64),
        activation: str = "relu",
        num_members: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_members < 1:
            raise SpecError(f"reward_model.ensemble_size must be >= 1, got {num_members}")
        activation_cls = activation_class(activation, "reward_model.activation")
        sizes = [int(input_dim), *(int(h) for h in net_arch), 1]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(EnsembleLinear(num_members, n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(activation_cls())
        self.layers = nn.Sequential(*layers)
        self.num_members = num_members
        self.input_dim = int(input_dim)
        generators = [torch.Generator().manual_seed(seed * 1000 + k) for k in range(num_members)]
        for layer in self.layers:
            if isinstance(layer, EnsembleLinear):
                layer.reset_parameters(generators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rewards ``[K, ...]`` of every member for inputs ``[..., D]`` (the same inputs for all members)."""
        lead = x.shape[:-1]
        flat = x.reshape(1, -1, x.shape[-1]).expand(self.num_members, -1, -1)
        return self.layers(flat).reshape(self.num_members, *lead)


class RewardEnsemble(nn.Module):
    """An ensemble of reward networks on normalised per-step features, with prediction helpers.

    :param inputs: one of :data:`REWARD_INPUTS`
    :param input_dim: ``D`` (see :func:`feature_dim`)
    :param num_members: ensemble size ``K`` (default 3)
    :param net_arch: hidden layer sizes of each member
    :param activation: hidden activation
    :param seed: initialisation seed (members get different seeds derived from it)
    """

    def __init__(
        self,
        inputs: str,
        input_dim: int,
        num_members: int = 3,
        net_arch: Sequence[int] = (64, 64),
        activation: str = "relu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.inputs = check_inputs(inputs)
        self.net = RewardNet(input_dim, net_arch, activation, num_members, seed)
        #: hidden layer sizes and activation name (what :meth:`architecture` reports)
        self.net_arch = tuple(int(h) for h in net_arch)
        self.activation = str(activation)
        # input normalisation, refreshed from the labelled data (why: factors such as Pendulum's
        # velocity^2 reach ~64 while cos/sin stay in [-1, 1])
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))
        # per-member output normalisation (Christiano et al.: each predictor is normalised on its own
        # before the average, so a member with a larger output scale does not dominate the reward)
        self.register_buffer("member_mean", torch.zeros(num_members))
        self.register_buffer("member_std", torch.ones(num_members))
        self._version = 0

    @property
    def num_members(self) -> int:
        return self.net.num_members

    @property
    def input_dim(self) -> int:
        """``D``, size of the per-step input."""
        return self.net.input_dim

    @property
    def device(self) -> torch.device:
        """Where the parameters live (move the ensemble with ``.to(device)``; numpy in and out either way)."""
        return self.input_mean.device

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a float32 tensor on this ensemble's device."""
        return torch.as_tensor(np.asarray(array), dtype=torch.float32, device=self.device)

    def architecture(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this ensemble's shape (JSON-ready, no seed):
        ``RewardEnsemble(**ensemble.architecture())`` has the same parameter and buffer shapes."""
        return {
            "inputs": self.inputs,
            "input_dim": self.input_dim,
            "num_members": self.num_members,
            "net_arch": list(self.net_arch),
            "activation": self.activation,
        }

    @property
    def version(self) -> int:
        """Incremented whenever the parameters change through :meth:`mark_updated` or a state-dict load."""
        return self._version

    def mark_updated(self) -> None:
        """Invalidate :meth:`numpy_predictor` snapshots (the trainer calls this after every fit)."""
        self._version += 1

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        result = super().load_state_dict(*args, **kwargs)
        self.mark_updated()
        return result

    def numpy_predictor(self) -> Callable[[np.ndarray], np.ndarray]:
        """A snapshot of the current ensemble-mean reward as a numpy function ``[B, D] -> [B]``.

        Why: the reward wrapper evaluates a few rows per env step; numpy on a copy of the weights is
        several times faster than torch's per-call overhead there. Later parameter updates do not
        reach an existing snapshot (check :attr:`version`).
        """
        mean = self.input_mean.cpu().numpy().astype(np.float64)
        std = self.input_std.cpu().numpy().astype(np.float64)
        member_mean = self.member_mean.cpu().numpy().astype(np.float64)[:, None]
        member_std = self.member_std.cpu().numpy().astype(np.float64)[:, None]
        layers = []
        for layer in self.net.layers:
            if isinstance(layer, EnsembleLinear):
                weight, bias = layer.weight.detach().cpu().numpy(), layer.bias.detach().cpu().numpy()
                layers.append((weight.astype(np.float64), bias))
            else:
                layers.append(numpy_activation(layer))

        def predict(features: np.ndarray) -> np.ndarray:
            x = np.clip((np.asarray(features, dtype=np.float64) - mean) / std, -10.0, 10.0)[None]
            for item in layers:
                x = item(x) if callable(item) else np.matmul(x, item[0]) + item[1]
            return ((x[..., 0] - member_mean) / member_std).mean(axis=0)

        return predict

    def set_input_normalization(self, features: np.ndarray) -> None:
        """Set the input mean/std from features ``[..., D]``."""
        flat = np.asarray(features, dtype=np.float64).reshape(-1, features.shape[-1])
        self.input_mean.copy_(self.tensor(flat.mean(axis=0)))
        self.input_std.copy_(self.tensor(np.maximum(flat.std(axis=0), 1e-6)))
        self.mark_updated()

    @torch.no_grad()
    def set_member_normalization(self, features: np.ndarray) -> None:
        """Set each member's output mean/std from its per-step rewards on features ``[..., D]``."""
        rewards = self.predict_steps(features).reshape(self.num_members, -1).astype(np.float64)
        self.member_mean.copy_(self.tensor(rewards.mean(axis=1)))
        self.member_std.copy_(self.tensor(np.maximum(rewards.std(axis=1), 1e-6)))
        self.mark_updated()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Per-step rewards ``[K, ...]`` of each member for features ``[..., D]``."""
        x = ((features - self.input_mean) / self.input_std).clamp(-10.0, 10.0)
        return self.net(x)

    # ---- numpy helpers (no gradients) -------------------------------------------------------------
    def features(self, segments: SegmentBatch) -> np.ndarray:
        """This ensemble's input features of ``segments``, ``[N, H, D]``."""
        return segment_features(self.inputs, segments)

    @torch.no_grad()
    def predict_steps(self, features: np.ndarray) -> np.ndarray:
        """Per-step rewards of each member, ``[..., D] -> [K, ...]`` float32."""
        return self(self.tensor(features)).cpu().numpy()

    @torch.no_grad()
    def predict_mean(self, features: np.ndarray) -> np.ndarray:
        """The reward: the mean over members of their normalised per-step rewards, ``[..., D] -> [...]``.

        ``mean_k (r_k - mu_k) / sigma_k``, with each member's mean and std on the labelled data
        (:meth:`set_member_normalization`, refreshed after every fit).
        """
        rewards = self(self.tensor(features))
        shape = (-1,) + (1,) * (rewards.dim() - 1)
        return ((rewards - self.member_mean.view(shape)) / self.member_std.view(shape)).mean(0).cpu().numpy()

    def segment_returns(self, segments: SegmentBatch) -> tuple[np.ndarray, np.ndarray]:
        """Predicted segment returns ``sum_t r_k(s_t, ...)``: mean and std across members, each ``[N]``."""
        returns = self.predict_steps(self.features(segments)).sum(axis=-1)  # [K, N]
        return returns.mean(axis=0), returns.std(axis=0)

    def preference_probabilities(self, features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """``P_k(seg i > seg j) = sigmoid(R_k(i) - R_k(j))`` per member, ``[K, M]``.

        :param features: segment features ``[N, H, D]``
        :param pairs: ``[M, 2]`` indices into the segments
        """
        returns = self.predict_steps(features).sum(axis=-1)  # [K, N]
        diff = returns[:, pairs[:, 0]] - returns[:, pairs[:, 1]]
        return 0.5 * (1.0 + np.tanh(0.5 * diff))  # overflow-free sigmoid


# --------------------------------------------------------------------------------------------------
# Loss and metrics
# --------------------------------------------------------------------------------------------------


def bradley_terry_loss(
    sum1: torch.Tensor, sum2: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Bradley-Terry cross-entropy of predicted segment returns against soft labels.

    ``P(seg1 > seg2) = sigmoid(sum1 - sum2)``; loss ``= BCE(P, y)`` with ``y = P(seg1 preferred)`` in
    [0, 1] (a tie, 0.5, pulls the two returns together).

    :param sum1: predicted returns of the first segments, ``[..., M]`` (e.g. ``[K, M]`` for an ensemble)
    :param sum2: predicted returns of the second segments, same shape
    :param y: labels ``[M]`` (broadcast against the leading dimensions)
    :param weights: optional per-pair weights broadcastable to ``sum1`` (bootstrap counts); the loss of
        each leading row is the weighted mean over pairs
    :returns: the mean loss over pairs, summed over leading (member) dimensions - members stay
        independent because each only receives the gradient of its own term
    """
    losses = F.binary_cross_entropy_with_logits(sum1 - sum2, y.expand_as(sum1), reduction="none")
    if weights is None:
        per_row = losses.mean(dim=-1)
    else:
        weights = weights.expand_as(losses)
        per_row = (losses * weights).sum(dim=-1) / weights.sum(dim=-1).clamp(min=1e-8)
    return per_row.sum()


def preference_accuracy(pred_diff: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of non-tie pairs whose predicted preference (sign of ``R(1) - R(2)``) matches the label.

    NaN when every label is a tie.
    """
    decided = labels != 0.5
    if not decided.any():
        return float("nan")
    return float(np.mean((pred_diff[decided] > 0) == (labels[decided] > 0.5)))


# --------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------


class RewardModelTrainer:
    """Keeps the labelled pairs and refits a :class:`RewardEnsemble` on them incrementally.

    Every :meth:`add` stores the new pairs (only the segments they use), sends a ``holdout_share`` of them
    to a held-out set, and gives each training pair a bootstrap weight per member (a Poisson(1) count,
    i.e. the online bootstrap: as the data grows each member trains on its own resample, without
    re-drawing the resample at every refit). :meth:`fit` then runs a few epochs of minibatch Adam over
    the (weighted) training pairs, warm-starting from the current weights, so a refit costs a few epochs
    rather than a fit from scratch (naive refits made an early prototype 3.3x slower than PPO).

    :param ensemble: the reward model (trained in place)
    :param learning_rate: Adam learning rate
    :param batch_size: pairs per minibatch
    :param epochs: epochs per :meth:`fit` unless given there
    :param holdout_share: share of added pairs kept out of training for :attr:`heldout_accuracy`
    :param bootstrap: give each member its own bootstrap resample (Poisson weights); off = all weights 1
    :param max_train_pairs: train on the most recent pairs only (a sliding window); ``None`` = all
    :param weight_decay: Adam L2 penalty
    :param rng: generator for the hold-out split, bootstrap weights and minibatch order
    """

    def __init__(
        self,
        ensemble: RewardEnsemble,
        learning_rate: float = 1e-3,
        batch_size: int = 64,
        epochs: int = 3,
        holdout_share: float = 0.1,
        bootstrap: bool = True,
        max_train_pairs: int | None = None,
        weight_decay: float = 0.0,
        rng: np.random.Generator | None = None,
        stop_accuracy: float | None = None,
    ) -> None:
        if stop_accuracy is not None and not 0.0 < stop_accuracy <= 1.0:
            raise SpecError(f"reward_model.stop_accuracy must lie in (0, 1] or be null, got {stop_accuracy}")
        if not 0.0 <= holdout_share < 1.0:
            raise SpecError(f"reward_model.holdout_share must lie in [0, 1), got {holdout_share}")
        if batch_size < 1 or epochs < 0:
            raise SpecError(f"reward_model: need batch_size >= 1 and epochs >= 0, got {batch_size}, {epochs}")
        if max_train_pairs is not None and max_train_pairs < 1:
            raise SpecError(f"reward_model.max_train_pairs must be >= 1 or null, got {max_train_pairs}")
        self.ensemble = ensemble
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self.holdout_share = float(holdout_share)
        self.bootstrap = bool(bootstrap)
        self.max_train_pairs = max_train_pairs
        self.stop_accuracy = stop_accuracy
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.optimizer = torch.optim.Adam(ensemble.parameters(), lr=learning_rate, weight_decay=weight_decay)
        k = ensemble.num_members
        self._features: np.ndarray | None = None  # [S, H, D] stored segments
        self._pairs = np.zeros((0, 2), dtype=np.int64)  # [M, 2] into the stored segments
        self._labels = np.zeros(0, dtype=np.float32)  # [M]
        self._weights = np.zeros((k, 0), dtype=np.float32)  # [K, M] bootstrap counts
        self._heldout = np.zeros(0, dtype=bool)  # [M]
        #: latest statistics (see :meth:`metrics`)
        self.last_loss = float("nan")
        self.new_accuracy = float("nan")
        self.fit_time_s = 0.0
        self.num_fits = 0
        #: epochs the latest fit ran (fewer than asked when it stopped at ``stop_accuracy``)
        self.last_epochs = 0
        #: training accuracy of the latest fit's last epoch (mean over members; NaN before any fit)
        self.last_train_accuracy = float("nan")

    # ---- data -------------------------------------------------------------------------------------
    @property
    def num_pairs(self) -> int:
        return len(self._labels)

    @property
    def num_train_pairs(self) -> int:
        return int(np.count_nonzero(~self._heldout))

    def add(self, prefs: PreferenceBatch) -> None:
        """Store labelled pairs; before storing, score the current model on them (:attr:`new_accuracy`)."""
        if len(prefs) == 0:
            return
        used, inverse = np.unique(prefs.pairs, return_inverse=True)
        feats = self.ensemble.features(prefs.segments[used])
        pairs = inverse.reshape(-1, 2).astype(np.int64)
        labels = prefs.labels.astype(np.float32)
        # prequential accuracy: how well the model predicts labels it has not trained on yet
        probs = self.ensemble.preference_probabilities(feats, pairs).mean(axis=0)
        self.new_accuracy = preference_accuracy(probs - 0.5, labels)
        if self._features is None:
            offset = 0
            self._features = feats
        else:
            if feats.shape[1:] != self._features.shape[1:]:
                raise ValueError(
                    f"segments of shape {feats.shape[1:]} do not match the stored ones "
                    f"{self._features.shape[1:]}"
                )
            offset = self._features.shape[0]
            self._features = np.concatenate([self._features, feats])
        m, k = len(labels), self.ensemble.num_members
        heldout = self.rng.random(m) < self.holdout_share
        if self.bootstrap and k > 1:
            weights = self.rng.poisson(1.0, size=(k, m)).astype(np.float32)
        else:
            weights = np.ones((k, m), dtype=np.float32)
        self._pairs = np.concatenate([self._pairs, pairs + offset])
        self._labels = np.concatenate([self._labels, labels])
        self._weights = np.concatenate([self._weights, weights], axis=1)
        self._heldout = np.concatenate([self._heldout, heldout])

    # ---- training ---------------------------------------------------------------------------------
    def _train_indices(self) -> np.ndarray:
        idx = np.flatnonzero(~self._heldout)
        if self.max_train_pairs is not None:
            idx = idx[-self.max_train_pairs :]
        return idx

    def _returns(self, pair_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # one forward pass for both sides of every pair: [K, 2B, H] -> segment sums [K, 2B]
        assert self._features is not None
        pairs = self._pairs[pair_idx]
        feats = self.ensemble.tensor(self._features[pairs.T.reshape(-1)])
        sums = self.ensemble(feats).sum(dim=-1)
        b = len(pair_idx)
        return sums[:, :b], sums[:, b:]

    def _normalization_sample(self) -> np.ndarray:
        """Stored segments the normalisers are estimated on: all, or :data:`NORMALIZATION_SEGMENTS`
        spread evenly over them (oldest to newest), so a refit's cost does not grow with the labels."""
        assert self._features is not None
        n = self._features.shape[0]
        if n <= NORMALIZATION_SEGMENTS:
            return self._features
        return self._features[np.linspace(0, n - 1, NORMALIZATION_SEGMENTS).round().astype(np.int64)]

    def fit(self, epochs: int | None = None) -> float:
        """Run ``epochs`` (default :attr:`epochs`) epochs over the training pairs; return the mean loss.

        With :attr:`stop_accuracy` set, the fit stops after the first epoch whose training accuracy (each
        member's share of correctly ordered non-tie pairs in that epoch's minibatches, before their
        update; mean over members) exceeds it: B-Pref's rule (up to ``reward_update`` epochs, stop above
        97%), which keeps refits short once the model fits its labels.

        The input normaliser is refreshed first, the per-member output normalisers after training, both
        from the stored segments (at most :data:`NORMALIZATION_SEGMENTS`, evenly spread).
        """
        start = time.perf_counter()
        epochs = self.epochs if epochs is None else int(epochs)
        idx = self._train_indices()
        if self._features is None or len(idx) == 0 or epochs == 0:
            return self.last_loss
        labels = self.ensemble.tensor(self._labels)
        weights = self.ensemble.tensor(self._weights)
        losses = []
        self.ensemble.set_input_normalization(self._normalization_sample())
        self.ensemble.train()
        for epoch in range(epochs):
            order = idx[self.rng.permutation(len(idx))]
            diffs = []  # each batch's predicted return differences [K, B], before its update
            for lo in range(0, len(order), self.batch_size):
                batch = order[lo : lo + self.batch_size]
                sum1, sum2 = self._returns(batch)
                loss = bradley_terry_loss(sum1, sum2, labels[batch], weights[:, batch])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item() / self.ensemble.num_members)
                diffs.append((sum1 - sum2).detach())
            member_diffs = torch.cat(diffs, dim=1).cpu().numpy()
            self.last_train_accuracy = float(
                np.mean([preference_accuracy(diff, self._labels[order]) for diff in member_diffs])
            )
            self.last_epochs = epoch + 1
            if self.stop_accuracy is not None and self.last_train_accuracy > self.stop_accuracy:
                break
        self.ensemble.eval()
        self.ensemble.set_member_normalization(self._normalization_sample())
        self.last_loss = float(np.mean(losses))
        self.fit_time_s += time.perf_counter() - start
        self.num_fits += 1
        return self.last_loss

    # ---- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def _accuracy(self, mask: np.ndarray) -> float:
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            return float("nan")
        diffs = []
        for lo in range(0, len(idx), 4096):
            sum1, sum2 = self._returns(idx[lo : lo + 4096])
            diffs.append((sum1 - sum2).mean(0).cpu().numpy())  # ensemble-mean logit
        return preference_accuracy(np.concatenate(diffs), self._labels[idx])

    @property
    def heldout_accuracy(self) -> float:
        """Accuracy of the ensemble mean on the held-out pairs (NaN without any)."""
        return self._accuracy(self._heldout)

    @property
    def train_accuracy(self) -> float:
        """Accuracy of the ensemble mean on the training pairs."""
        return self._accuracy(~self._heldout)

    def metrics(self) -> dict[str, float]:
        """``rm_accuracy`` (held-out), ``rm_new_accuracy`` (on the latest pairs, before training on them),
        ``rm_loss`` (mean loss of the latest fit), ``rm_pairs``, ``rm_fit_s`` (cumulative fit time) and, with
        :attr:`stop_accuracy`, ``rm_fit_epochs`` (epochs the latest fit ran)."""
        return {
            "rm_accuracy": self.heldout_accuracy,
            "rm_new_accuracy": self.new_accuracy,
            "rm_loss": self.last_loss,
            "rm_pairs": float(self.num_pairs),
            "rm_fit_s": self.fit_time_s,
            # only with early stopping, where the epochs a fit ran vary
            **({"rm_fit_epochs": float(self.last_epochs)} if self.stop_accuracy is not None else {}),
        }
