"""Agent interface and the SB3-PPO template every PPO-based agent (ppo, rm_ppo, heron, spo) builds on.

An :class:`Agent` is constructed from an env spec, a resolved config (see :mod:`prefrl.config`), an
optional rater and a seed; it trains with :meth:`Agent.learn` under an env-step and a query budget and
reports progress through a :class:`~prefrl.evaluation.ProgressHook`, which evaluates it on the TRUE
env return with :meth:`Agent.predict`.

:class:`PPOAgent` owns the SB3 training loop. Subclasses add their idea through small hooks instead of
re-owning the loop:

* :meth:`PPOAgent.wrap_env` - wrap the training VecEnv (rm_ppo/heron substitute a learned reward here);
* :meth:`PPOAgent.rollout_buffer_class` / :meth:`PPOAgent.rollout_buffer_kwargs` - a custom rollout
  buffer (spo rewrites rewards in the buffer before advantages are computed);
* :meth:`PPOAgent.extra_callbacks` - SB3 callbacks run before the progress callback (rm_ppo refits its
  reward model at rollout end).
"""

from __future__ import annotations

import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from prefrl.spec_utils import SpecError, suggest

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.evaluation import ProgressHook
    from prefrl.raters.base import Rater

#: allowed nested keys of a config section; ``None`` = free-form (not checked)
Schema = dict[str, "Schema | tuple[str, ...] | None"]

#: config keys every agent accepts, with their defaults (an agent YAML's ``defaults:`` overrides them)
COMMON_DEFAULTS: dict[str, Any] = {
    "n_envs": 1,  # parallel training envs
    "eval_freq": 10_000,  # env steps between evaluations (plus one at step 0 and one at the end)
    "n_eval_episodes": 5,  # deterministic episodes per evaluation, on the true reward
    "total_steps": 100_000,  # default env-step budget
    "queries": 0,  # default query budget (preference labels)
    "torch_threads": 1,  # torch.set_num_threads; 1 keeps parallel sweeps from oversubscribing cores
    "policy_kwargs": {},
}

#: activation functions accepted by name in ``policy_kwargs.activation_fn``
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "elu": torch.nn.ELU,
    "leaky_relu": torch.nn.LeakyReLU,
    "gelu": torch.nn.GELU,
    "silu": torch.nn.SiLU,
}

# SB3 ActorCriticPolicy arguments a config may set (the spaces and lr schedule come from PPO itself)
_POLICY_KEYS = ("net_arch", "activation_fn", "ortho_init", "log_std_init", "full_std", "use_expln")

# SB3 PPO constructor arguments owned by PPOAgent (set from the run, the hooks or policy_kwargs)
_PPO_RESERVED = {
    "self",
    "policy",
    "env",
    "seed",
    "device",
    "verbose",
    "tensorboard_log",
    "policy_kwargs",
    "rollout_buffer_class",
    "rollout_buffer_kwargs",
    "_init_setup_model",
}
PPO_KEYS: tuple[str, ...] = tuple(
    p for p in inspect.signature(PPO.__init__).parameters if p not in _PPO_RESERVED
)


class Agent(ABC):
    """A learner evaluated on the true env return.

    :param env_spec: the environment spec (``prefrl.envs.load_env_spec``)
    :param config: resolved config (``prefrl.config.load_agent_config``): :data:`COMMON_DEFAULTS` keys plus
        the agent's own :attr:`config_keys`
    :param rater: the preference model answering queries; ``None`` for agents that need none
    :param seed: run seed; every random draw of the agent derives from it
    :param device: torch device
    """

    #: registry name (``make_agent(name, ...)``); also the agents/<name>.yaml file stem
    name: ClassVar[str] = "agent"
    #: True if the agent learns from preferences and cannot run without a rater
    requires_rater: ClassVar[bool] = False
    #: agent-specific top-level config keys -> allowed nested keys (``None``: free-form value)
    config_keys: ClassVar[Schema] = {}

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if self.requires_rater and rater is None:
            raise ValueError(f"agent '{self.name}' learns from preferences and needs a rater")
        self.env_spec = env_spec
        self.config = {**COMMON_DEFAULTS, **dict(config)}
        self.rater = rater
        self.seed = seed
        self.device = device
        #: show a progress bar while learning (default: only when stdout is a terminal)
        self.progress_bar: bool = sys.stdout.isatty()
        #: budgets of the current :meth:`learn` call (set there, read by hooks and callbacks)
        self.total_steps = 0
        self.query_budget = 0
        #: the agent's own generator, for draws outside torch/SB3 (pair sampling, queue draws, ...)
        self.rng = np.random.default_rng(seed)
        torch.set_num_threads(int(self.config["torch_threads"]))

    @classmethod
    def config_schema(cls) -> Schema:
        """Every allowed top-level config key -> allowed nested keys (``None``: not checked)."""
        schema: Schema = {key: None for key in COMMON_DEFAULTS}
        schema["policy_kwargs"] = _POLICY_KEYS
        schema.update(cls.config_keys)
        return schema

    @abstractmethod
    def learn(self, total_steps: int, query_budget: int, callback: ProgressHook | None = None) -> None:
        """Train for ``total_steps`` env steps using at most ``query_budget`` rater queries.

        Implementations store both budgets on ``self`` first, then report progress through ``callback``:
        ``callback.maybe_eval(env_steps, self)`` whenever convenient (it evaluates when one is due, and
        must be called at step 0) and ``callback.on_end(env_steps, self)`` after the last update.
        SB3-based agents get this from :class:`~prefrl.evaluation.ProgressCallback`.
        """

    @abstractmethod
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions ``[n, act_dim]`` for raw (unnormalised) env observations ``[n, obs_dim]``."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Save the final policy to ``path`` (e.g. ``run_dir / "policy.zip"``)."""

    @property
    def num_queries(self) -> int:
        """Preference queries answered so far (the rater's count; 0 without a rater)."""
        return 0 if self.rater is None else int(self.rater.num_queries)

    def metrics(self) -> dict[str, float]:
        """Agent-specific scalars for progress.csv (e.g. reward-model accuracy); none by default."""
        return {}

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release envs and other resources."""


def linear_schedule(start: float, end: float = 0.0) -> Callable[[float], float]:
    """SB3 schedule going linearly from ``start`` (progress_remaining 1) to ``end`` (progress_remaining 0)."""

    def schedule(progress_remaining: float) -> float:
        return end + progress_remaining * (start - end)

    return schedule


def parse_schedule(value: Any, where: str) -> float | Callable[[float], float]:
    """A float, or an rl-zoo-style string ``"lin_<start>"`` / ``"lin_<start>_<end>"`` (linear decay)."""
    if isinstance(value, str):
        try:  # PyYAML reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
        parts = value.split("_")
        try:
            if parts[0] != "lin" or len(parts) not in (2, 3):
                raise ValueError
            return linear_schedule(*(float(p) for p in parts[1:]))
        except ValueError:
            raise SpecError(
                f"{where}: expected a number, 'lin_<start>' or 'lin_<start>_<end>', got {value!r}"
            ) from None
    return float(value)


def build_policy_kwargs(policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` from the config; ``activation_fn`` is a name (``"tanh"``, ``"relu"``, ...)."""
    kwargs = dict(policy_kwargs)
    if isinstance(kwargs.get("activation_fn"), str):
        name = kwargs["activation_fn"].lower()
        if name not in ACTIVATIONS:
            raise SpecError(
                f"policy_kwargs.activation_fn: unknown activation '{name}'{suggest(name, ACTIVATIONS)}; "
                f"allowed: {', '.join(ACTIVATIONS)}"
            )
        kwargs["activation_fn"] = ACTIVATIONS[name]
    return kwargs


class PPOAgent(Agent):
    """SB3 PPO on the training VecEnv, with hooks for preference-based variants.

    Config keys (beyond the common ones): ``ppo`` (SB3 PPO constructor kwargs; ``learning_rate`` and
    ``clip_range`` also accept ``"lin_<start>[_<end>]"``), ``normalize`` (``false``, ``true`` or
    VecNormalize kwargs: observation/reward normalisation, statistics reused by :meth:`predict`),
    ``vec_env`` (``"dummy"`` or ``"subproc"``).

    The training env stack is ``make_vec_env -> wrap_env -> VecNormalize`` (the normaliser is outermost so
    a learned reward sees raw observations).
    """

    name = "ppo_template"
    config_keys: ClassVar[Schema] = {"ppo": PPO_KEYS, "normalize": None, "vec_env": None}

    @classmethod
    def config_schema(cls) -> Schema:
        # subclasses only list their own keys in config_keys; the PPO ones are always allowed
        return {**super().config_schema(), **PPOAgent.config_keys, **cls.config_keys}

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__(env_spec, config, rater, seed, device)
        set_random_seed(seed)
        self.venv: VecEnv = self._build_train_env()
        self.model: PPO = self._build_model()

    # ---- hooks for subclasses -------------------------------------------------------------------
    def wrap_env(self, venv: VecEnv) -> VecEnv:
        """Wrap the training VecEnv (before observation/reward normalisation). Identity by default."""
        return venv

    def rollout_buffer_class(self) -> type[RolloutBuffer] | None:
        """Rollout buffer class for SB3 PPO; ``None`` = SB3's default :class:`RolloutBuffer`."""
        return None

    def rollout_buffer_kwargs(self) -> dict[str, Any] | None:
        """Extra keyword arguments for the rollout buffer."""
        return None

    def extra_callbacks(self) -> list[BaseCallback]:
        """SB3 callbacks run before the progress callback; called at the start of every :meth:`learn`."""
        return []

    # ---- construction ---------------------------------------------------------------------------
    def _build_train_env(self) -> VecEnv:
        from prefrl.envs import make_vec_env

        vec_env_name = self.config.get("vec_env", "dummy")
        vec_env_classes = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
        if vec_env_name not in vec_env_classes:
            raise SpecError(f"vec_env: expected 'dummy' or 'subproc', got {vec_env_name!r}")
        venv = make_vec_env(
            self.env_spec,
            n_envs=int(self.config["n_envs"]),
            seed=self.seed,
            vec_env_cls=vec_env_classes[vec_env_name],
        )
        venv = self.wrap_env(venv)
        normalize = self.config.get("normalize", False)
        if normalize:
            norm_kwargs = dict(normalize) if isinstance(normalize, Mapping) else {}
            # normalised returns use the PPO discount unless the config says otherwise
            norm_kwargs.setdefault("gamma", float(self.config.get("ppo", {}).get("gamma", 0.99)))
            venv = VecNormalize(venv, **norm_kwargs)
        return venv

    def _build_model(self) -> PPO:
        ppo_kwargs = dict(self.config.get("ppo", {}))
        for key in ("learning_rate", "clip_range", "clip_range_vf"):
            if ppo_kwargs.get(key) is not None:
                ppo_kwargs[key] = parse_schedule(ppo_kwargs[key], f"ppo.{key}")
        return PPO(
            "MlpPolicy",
            self.venv,
            policy_kwargs=build_policy_kwargs(self.config.get("policy_kwargs", {})),
            rollout_buffer_class=self.rollout_buffer_class(),
            rollout_buffer_kwargs=self.rollout_buffer_kwargs(),
            seed=self.seed,
            device=self.device,
            verbose=0,
            **ppo_kwargs,
        )

    # ---- Agent API --------------------------------------------------------------------------------
    def learn(self, total_steps: int, query_budget: int, callback: ProgressHook | None = None) -> None:
        from prefrl.evaluation import ProgressCallback

        self.total_steps = int(total_steps)
        self.query_budget = int(query_budget)
        callbacks = list(self.extra_callbacks())
        if callback is not None:
            callback.attach_sb3_logger(self.model)
            callbacks.append(ProgressCallback(callback, self))
        self.model.learn(self.total_steps, callback=CallbackList(callbacks), progress_bar=self.progress_bar)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        if isinstance(self.venv, VecNormalize):
            # training statistics, never fresh ones: evaluation must see what the policy was trained on
            obs = self.venv.normalize_obs(obs)
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return action

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.model.save(path)
        if isinstance(self.venv, VecNormalize):
            self.venv.save(path.with_name("vecnormalize.pkl"))

    def close(self) -> None:
        self.venv.close()
