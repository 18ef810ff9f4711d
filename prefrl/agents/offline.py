"""Shared mechanics of the offline agents (``cpl``, ``bc``): policy network, data loading, training loop.

An :class:`OfflineAgent` never steps an environment while it learns. It reads a labelled preference
dataset (:mod:`prefrl.datasets`; built from the env's oracle on first use and cached), then runs
``total_steps`` *gradient steps*; the env is only used to evaluate the deterministic policy on the TRUE
return. Subclasses add their idea through two hooks: :meth:`OfflineAgent.setup_data` (turn the dataset
into tensors) and :meth:`OfflineAgent.compute_loss` (one minibatch loss).

Budgets of ``run_experiment`` for offline agents:

* ``--steps`` = gradient steps;
* ``--queries`` = labelled pairs used from the dataset (the first ``queries`` pairs, a uniform subset;
  0 = all of them).

Progress rows go through the same :class:`~prefrl.evaluation.ProgressHook` as online agents, every
``eval_freq`` *gradient steps* (plus step 0 and the end). ``env_steps`` is the constant number of env
steps rolled out to build the dataset; ``grad_steps`` and ``labelled_pairs`` are extra columns, with the
losses under ``train/``.

The policy follows the official CPL code (jhejna/cpl, ``ContinuousMLPActor``): a deterministic MLP with
dropout after each hidden layer and a ``tanh`` output, read as a fixed-variance Gaussian over actions
rescaled to ``[-1, 1]``. Its log-likelihood is, as there, ``log pi(a|s) = -||mu(s) - a||^2`` (a Gaussian
with variance 1/2 per dimension, constant term dropped).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from prefrl.agents.base import Agent, PredictFn
from prefrl.datasets import DatasetConfig, PreferenceDataset, build_dataset, load_dataset
from prefrl.envs import EnvSpec
from prefrl.errors import RunDirError, SpecError
from prefrl.networks import activation
from prefrl.run_dir import load_run_env_spec, read_run_config
from prefrl.spec_utils import ConfigSection

if TYPE_CHECKING:
    from prefrl.evaluation import ProgressHook
    from prefrl.raters.base import Rater

logger = logging.getLogger(__name__)

#: the policy's description beside its weights (JSON)
POLICY_INFO_FILE = "policy.json"
#: version of :data:`POLICY_INFO_FILE`
POLICY_FORMAT = 1


@dataclass(frozen=True)
class OfflineConfig(ConfigSection):
    """The ``offline:`` section shared by every offline agent (defaults: the official CPL code)."""

    ranges: ClassVar[dict[str, str]] = {
        "learning_rate": "(0, inf)",
        "lr_warmup_fraction": "[0, 1)",
        "action_eps": "(0, 1)",
        "grad_clip": "(0, inf)",
    }

    #: minibatch size (CPL: pairs per gradient step; BC: segments)
    batch_size: int = 96
    #: Adam learning rate
    learning_rate: float = 1.0e-4
    #: linear learning-rate warm-up, as a share of the gradient steps (CPL: after its BC phase)
    lr_warmup_fraction: float = 0.0
    #: dropout after each hidden layer
    dropout: float = 0.25
    #: standardise observations with the dataset's mean and std (not in the official code)
    normalize_obs: bool = False
    #: actions rescaled to [-1, 1] are clipped to 1 - action_eps
    action_eps: float = 1.0e-5
    #: max gradient norm (None = no clipping, as the official code)
    grad_clip: float | None = None

    def validate(self, where: str) -> None:
        if self.batch_size < 1:
            raise SpecError(f"{where}.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"{where}.dropout must lie in [0, 1), got {self.dropout}")


#: policy_kwargs keys the offline policy reads (net_arch, activation_fn, ortho_init)
_POLICY_DEFAULTS: dict[str, Any] = {"net_arch": [512, 512], "activation_fn": "relu", "ortho_init": True}


class DeterministicTanhPolicy(nn.Module):
    """``mu(s)`` in ``[-1, 1]^act_dim``: MLP, dropout after each hidden layer, ``tanh`` output.

    Observations are standardised with fixed statistics (buffers, saved with the weights).

    :param obs_dim: observation size.
    :param act_dim: action size.
    :param net_arch: hidden layer sizes.
    :param activation: hidden activation class.
    :param dropout: dropout probability after each hidden layer (active in ``train()`` mode only).
    :param ortho_init: orthogonal weights (gain 1) and zero biases, as the official CPL code.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        net_arch: Sequence[int] = (512, 512),
        activation: type[nn.Module] = nn.ReLU,
        dropout: float = 0.25,
        ortho_init: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = obs_dim
        for width in net_arch:
            layers.append(nn.Linear(last, int(width)))
            if dropout > 0.0:
                layers.append(nn.Dropout(dropout))
            layers.append(activation())
            last = int(width)
        layers += [nn.Linear(last, act_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        if ortho_init:
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.orthogonal_(module.weight, gain=1.0)
                    nn.init.zeros_(module.bias)

    def set_obs_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise inputs with ``(obs - mean) / std`` from now on (std floored at 1e-6)."""
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``mu(s)``: ``[..., obs_dim] -> [..., act_dim]`` in ``[-1, 1]``."""
        return self.net((obs - self.obs_mean) / self.obs_std)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``log pi(a|s) = -||mu(s) - a||^2``, rescaled actions: ``[..., obs], [..., act] -> [...]``."""
        return -torch.square(self(obs) - act).sum(dim=-1)


def build_policy(env_spec: EnvSpec, config: Mapping[str, Any]) -> DeterministicTanhPolicy:
    """The untrained policy network of an offline agent's config (``policy_kwargs``, ``offline.dropout``)."""
    kwargs = {**_POLICY_DEFAULTS, **dict(config.get("policy_kwargs") or {})}
    activation_cls = activation(kwargs["activation_fn"], "policy_kwargs.activation_fn")
    net_arch = kwargs["net_arch"]
    if not (isinstance(net_arch, Sequence) and all(isinstance(w, int) and w > 0 for w in net_arch)):
        raise SpecError(f"policy_kwargs.net_arch must be a list of positive ints, got {net_arch!r}")
    return DeterministicTanhPolicy(
        int(np.prod(env_spec.observation_space.shape)),
        int(np.prod(env_spec.action_space.shape)),
        net_arch=net_arch,
        activation=activation_cls,
        dropout=OfflineConfig.from_mapping(config.get("offline"), "offline").dropout,
        ortho_init=bool(kwargs["ortho_init"]),
    )


class OfflineAgent(Agent):
    """An agent that learns from a fixed labelled dataset by gradient steps (template for cpl and bc).

    Config: the common keys, ``policy_kwargs`` (``net_arch``, ``activation_fn``, ``ortho_init``),
    ``offline`` (:class:`OfflineConfig`) and ``dataset`` (:class:`~prefrl.datasets.DatasetConfig`).
    Subclasses implement
    :meth:`setup_data`, :meth:`num_batches_per_epoch` and :meth:`compute_loss`; they may override
    :meth:`on_step_start` (e.g. to switch phases and reset the optimiser).
    """

    name = "offline_template"
    requires_rater = True
    # [512, 512] policies on batches of 96 pairs x 64 steps: a GPU pays (``--device auto`` uses one)
    gpu_pays = True
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {
        "offline": OfflineConfig,
        "dataset": DatasetConfig,
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
        if not hasattr(env_spec.action_space, "low"):
            raise SpecError(f"offline agents need a Box action space; {env_spec.name} has none")
        self.sections = self.parse_sections(self.config)
        self.offline: OfflineConfig = self.sections["offline"]  # type: ignore[assignment]
        self.batch_size = self.offline.batch_size
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # network initialisation and dropout masks
        low = np.asarray(env_spec.action_space.low, dtype=np.float32)
        high = np.asarray(env_spec.action_space.high, dtype=np.float32)
        self._act_mid, self._act_half = (high + low) / 2.0, (high - low) / 2.0
        self.policy = self._build_policy()
        self.optimizer = self.make_optimizer()
        self.dataset: PreferenceDataset | None = None
        self.grad_steps = 0
        self._latest: dict[str, float] = {}

    # ---- construction ---------------------------------------------------------------------------
    def _build_policy(self) -> DeterministicTanhPolicy:
        return build_policy(self.env_spec, self.config).to(self.device)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """A fresh Adam over the policy's parameters (``offline.learning_rate``)."""
        return torch.optim.Adam(self.policy.parameters(), lr=self.offline.learning_rate)

    # ---- data -----------------------------------------------------------------------------------
    def load_data(self, query_budget: int) -> PreferenceDataset:
        """The dataset (``dataset.path``, else built or cached), cut to ``query_budget`` pairs."""
        cfg: DatasetConfig = self.sections["dataset"]  # type: ignore[assignment]
        path = cfg.path
        if path is None:
            if self.rater is None:
                raise SpecError(f"agent '{self.name}' needs a rater to label its dataset")
            # building draws from torch's global generator: keep it, so a run that builds the dataset and
            # one that finds it cached train with the same dropout masks
            with torch.random.fork_rng(devices=[]):
                path = build_dataset(self.env_spec, self.rater, **cfg.build_kwargs())
        data = load_dataset(path, self.env_spec)
        return data.take(query_budget) if query_budget > 0 else data

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device)

    def normalised_actions(self, act: np.ndarray) -> torch.Tensor:
        """Env actions ``[..., act_dim]`` -> ``[-1, 1]``, clipped to ``1 - action_eps`` (official)."""
        lim = 1.0 - self.offline.action_eps
        return self.to_tensor(np.clip((act - self._act_mid) / self._act_half, -lim, lim))

    def epoch_batches(self, num_items: int) -> Iterator[torch.Tensor]:
        """Endless minibatches of indices: shuffled epochs over ``num_items`` (last partial batch kept)."""
        while True:
            order = torch.randperm(num_items, generator=self.generator)
            yield from order.split(self.batch_size)

    # ---- hooks for subclasses -------------------------------------------------------------------
    @abstractmethod
    def setup_data(self, data: PreferenceDataset) -> int:
        """Prepare tensors from ``data``; return the number of items (pairs or segments) batches index."""

    @abstractmethod
    def compute_loss(self, index: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of the minibatch ``index`` and scalars to log (names without prefix)."""

    def on_step_start(self, step: int, total_steps: int) -> None:
        """Called before gradient step ``step`` (0-based) of ``total_steps``."""

    def learning_rate_scale(self, step: int, total_steps: int) -> float:
        """Multiplier of ``offline.learning_rate`` at ``step``: linear warm-up over ``lr_warmup_fraction``."""
        warmup = self.offline.lr_warmup_fraction * total_steps
        return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)

    # ---- Agent API --------------------------------------------------------------------------------
    def learn(self, total_steps: int, query_budget: int, callback: ProgressHook | None = None) -> None:
        self.total_steps, self.query_budget = int(total_steps), int(query_budget)
        self.dataset = self.load_data(self.query_budget)
        if self.offline.normalize_obs:
            obs = self.dataset.segments.obs.reshape(-1, self.dataset.segments.obs.shape[-1])
            self.policy.set_obs_normalisation(obs.mean(axis=0), obs.std(axis=0))
        batches = self.epoch_batches(self.setup_data(self.dataset))
        grad_clip = self.offline.grad_clip
        eval_freq = int(self.config["eval_freq"])
        logger.info(
            "%s: %d gradient steps on %d labelled pairs (%s)",
            self.name,
            self.total_steps,
            self.dataset.num_pairs,
            self.dataset.path,
        )
        # the same condition as the SB3 agents' bar (Agent.progress_bar: stdout is a terminal)
        bar = tqdm(
            total=self.total_steps,
            desc=f"{self.name} gradient steps",
            unit="step",
            dynamic_ncols=True,
            disable=not self.progress_bar,
        )
        try:
            self._evaluate(callback, bar)
            self._train_steps(batches, grad_clip, eval_freq, callback, bar)
        finally:
            bar.close()

    def _train_steps(
        self,
        batches: Iterator[torch.Tensor],
        grad_clip: float | None,
        eval_freq: int,
        callback: ProgressHook | None,
        bar: tqdm,
    ) -> None:
        start = time.perf_counter()
        for step in range(self.total_steps):
            self.on_step_start(step, self.total_steps)
            lr = self.offline.learning_rate * self.learning_rate_scale(step, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.policy.train()
            loss, scalars = self.compute_loss(next(batches))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(self.policy.parameters(), float(grad_clip))
            self.optimizer.step()
            self.grad_steps = step + 1
            self._latest = {f"train/{k}": v for k, v in scalars.items()}
            self._latest["train/learning_rate"] = lr
            self._latest["train/grad_steps_per_s"] = self.grad_steps / (time.perf_counter() - start)
            bar.update(1)
            if self.grad_steps % eval_freq == 0 or self.grad_steps == self.total_steps:
                self._evaluate(callback, bar)

    def _evaluate(self, callback: ProgressHook | None, bar: tqdm | None = None) -> None:
        if callback is None or self.dataset is None:
            return
        extra = {"grad_steps": self.grad_steps, "labelled_pairs": self.dataset.num_pairs, **self._latest}
        row = callback.on_eval(self.dataset.env_steps, self, extra)
        if bar is not None:
            bar.set_postfix(true_return=f"{row['true_return_mean']:.1f}", refresh=False)

    @property
    def num_queries(self) -> int:
        """Labelled pairs the agent learns from (a reused cached dataset cost the rater no new queries)."""
        return 0 if self.dataset is None else self.dataset.num_pairs

    @property
    def queries_asked(self) -> int:
        """The dataset's labelled pairs (its skipped queries were never stored)."""
        return self.num_queries

    @property
    def queries_answered(self) -> int:
        return self.num_queries

    @torch.no_grad()
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Deterministic actions ``[n, act_dim]`` (dropout off), mapped back to the env's bounds."""
        self.policy.eval()
        mu = self.policy(self.to_tensor(obs)).cpu().numpy()
        return self._act_mid + self._act_half * mu

    def save(self, path: str | Path) -> None:
        """The policy at ``path``: a torch archive of tensors only (state dict, action bounds), read back
        with ``torch.load(weights_only=True)``; the rest (agent, config, dataset, gradient steps) goes to
        ``policy.json`` beside it."""
        path = Path(path)
        torch.save(
            {
                "state_dict": self.policy.state_dict(),
                "action_low": torch.as_tensor(self._act_mid - self._act_half),
                "action_high": torch.as_tensor(self._act_mid + self._act_half),
            },
            path,
        )
        info = {
            "format": POLICY_FORMAT,
            "agent": self.name,
            "weights": path.name,
            "config": self.config,
            "dataset": None if self.dataset is None else str(self.dataset.path),
            "grad_steps": self.grad_steps,
        }
        # the config is read back from config.yaml; here it documents the weights (default=str: any
        # value YAML could not hold either is written as text)
        (path.parent / POLICY_INFO_FILE).write_text(json.dumps(info, indent=2, default=str))

    def load_weights(self, path: str | Path) -> None:
        """Load weights written by :meth:`save` into this agent's policy (nothing in the file can run code).

        :raises RunDirError: the file is missing, damaged or holds more than tensors
        """
        self.policy.load_state_dict(_read_weights(Path(path), trust=False)["state_dict"])

    @classmethod
    def load_policy(cls, run_dir: str | Path, trust: bool = False) -> PredictFn:
        """The policy saved in ``run_dir/policy.zip``, acting in the env's action bounds (dropout off).

        The archive is read with ``torch.load(weights_only=True)``. Runs saved before it held tensors only
        (their archive also pickled numpy arrays and the config) need ``trust=True``, which unpickles it:
        a crafted file then runs code, so only for folders you trust.

        :raises RunDirError: missing or damaged file, or an older run without ``trust``
        """
        run_dir = Path(run_dir)
        run = read_run_config(run_dir)
        env_spec = load_run_env_spec(run_dir)
        with torch.random.fork_rng(
            devices=[]
        ):  # the initial weights are overwritten: keep the caller's stream
            policy = build_policy(env_spec, run["config"])
        weights = run_dir / "policy.zip"
        try:
            policy.load_state_dict(_read_weights(weights, trust)["state_dict"])
        except RuntimeError as e:
            raise RunDirError(
                f"{weights}: does not fit the run's policy network ({_first_line(e)})"
            ) from None
        policy.eval()
        low = np.asarray(env_spec.action_space.low, dtype=np.float32)
        high = np.asarray(env_spec.action_space.high, dtype=np.float32)
        mid, half = (high + low) / 2.0, (high - low) / 2.0

        @torch.no_grad()
        def predict(obs: np.ndarray) -> np.ndarray:
            return mid + half * policy(torch.as_tensor(np.asarray(obs, dtype=np.float32))).numpy()

        return predict


def _first_line(error: BaseException) -> str:
    """The first line of an error's text, without terminal colour codes (torch's unpickler adds some)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _read_weights(path: Path, trust: bool) -> dict[str, Any]:
    """The archive :meth:`OfflineAgent.save` wrote: ``weights_only=True``; ``trust`` also unpickles an
    older archive (it can run code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except Exception as e:  # any unpickling failure: not an archive of tensors
        if not trust:
            raise RunDirError(
                f"{path}: not an archive of tensors ({_first_line(e)}); a policy saved by an older prefrl "
                "can only be read by unpickling, which can run code from a crafted file: if you trust "
                "this folder, load it with --trust (trust=True)"
            ) from None
        logger.warning("%s: unpickling the policy (trusted)", path)
        state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), Mapping):
        raise RunDirError(f"{path}: not a policy archive (no state_dict)")
    return state


def mean_or_nan(values: torch.Tensor) -> float:
    """Mean of a tensor as a float; NaN when it is empty (e.g. accuracy over a batch of ties only)."""
    return float(values.float().mean()) if values.numel() else math.nan
