"""The interface every prefrl agent implements.

An :class:`Agent` is constructed from an env spec, a resolved config (see :mod:`prefrl.config`), an
optional rater and a seed; it trains with :meth:`Agent.learn` under an env-step and a query budget and
reports progress through a :class:`~prefrl.evaluation.ProgressHook`, which evaluates it on the TRUE
env return with :meth:`Agent.predict`. :meth:`Agent.save` writes the final policy into a run directory and
:meth:`Agent.load_policy` reads it back from there (``prefrl render --run``).

Templates built on it: :class:`prefrl.agents.on_policy.PPOAgent` (SB3 PPO: ppo, rm_ppo, heron, spo),
:class:`prefrl.agents.off_policy.SACAgent` (SB3 SAC: sac, pebble) and
:class:`prefrl.agents.offline.OfflineAgent` (cpl, p_iql, bc).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from prefrl.errors import ConfigError, SpecError
from prefrl.spec_utils import ConfigSection

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.evaluation import ProgressHook
    from prefrl.raters.base import Rater

__all__ = [
    "COMMON_DEFAULTS",
    "DEVICE_CHOICES",
    "POLICY_KEYS",
    "Agent",
    "PredictFn",
    "Schema",
    "first_docstring_line",
    "resolve_device",
]

#: a policy: raw observations [n, obs_dim] -> actions [n, act_dim]
PredictFn = Callable[[np.ndarray], np.ndarray]

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

# SB3 ActorCriticPolicy arguments a config may set (the spaces and lr schedule come from PPO itself)
POLICY_KEYS = ("net_arch", "activation_fn", "ortho_init", "log_std_init", "full_std", "use_expln")


#: values of ``--device`` besides an explicit torch device string such as ``cuda:1``
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str, agent_class: type[Agent]) -> str:
    """The torch device an agent runs on, SB3's convention: ``cpu``, ``cuda[:k]`` or ``auto``.

    ``auto`` is CUDA when one is available and the agent benefits from it (:attr:`Agent.gpu_pays`: the
    offline agents' large networks do, PPO's small MLPs do not), else the CPU.

    :raises SpecError: not a device name, or CUDA asked for where none is available
    """
    text = str(requested).strip().lower()
    if text == "auto":
        return "cuda" if agent_class.gpu_pays and torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise SpecError(
            f"--device: unknown device {requested!r}; one of {', '.join(DEVICE_CHOICES)} or cuda:<index>"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise SpecError(f"--device: prefrl runs on cpu or cuda, got {requested!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(
                f"--device {requested}: no CUDA device is available to torch {torch.__version__}; use "
                "--device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s)")
    return str(device)


def first_docstring_line(obj: object) -> str:
    """The first line of ``obj``'s docstring, without a trailing full stop ("" without a docstring)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip().rstrip(".") if doc else ""


class Agent(ABC):
    """A learner evaluated on the true env return.

    :param env_spec: the environment spec (``prefrl.envs.load_env_spec``)
    :param config: resolved config (``prefrl.config.load_agent_config``): :data:`COMMON_DEFAULTS` keys plus
        the agent's own :attr:`config_keys`
    :param rater: the preference model answering queries; ``None`` for agents that need none
    :param seed: run seed; every random draw of the agent derives from it
    :param device: torch device (``cpu``, ``cuda``, ``cuda:1``; :func:`resolve_device` turns ``auto`` into
        one of them)
    """

    #: registry name (``make_agent(name, ...)``); also the agents/<name>.yaml file stem
    name: ClassVar[str] = "agent"
    #: one line saying what the agent does (``prefrl list``); a subclass that sets none gets the first
    #: line of its own docstring (or keeps its parent's)
    description: ClassVar[str] = ""
    #: True if the agent learns from preferences and cannot run without a rater
    requires_rater: ClassVar[bool] = False
    #: the agent's config YAML (``defaults:`` / ``envs:``) when it is not ``agents/<name>.yaml``; an agent
    #: with neither runs on its config sections' defaults (third-party agents ship their own file here)
    config_file: ClassVar[str | Path | None] = None
    #: agent-specific top-level config keys -> allowed nested keys (``None``: free-form value)
    config_keys: ClassVar[Schema] = {}
    #: typed config sections: top-level key -> its :class:`~prefrl.spec_utils.ConfigSection` (the one
    #: source of the section's defaults; the agent YAML sets tuned values only)
    config_sections: ClassVar[dict[str, type[ConfigSection]]] = {}
    #: ``device="auto"`` picks CUDA for this agent when one is available; False for agents whose small
    #: networks run faster on the CPU (SB3's advice for PPO with MLP policies)
    gpu_pays: ClassVar[bool] = False

    def __init__(
        self,
        env_spec: EnvSpec,
        config: Mapping[str, Any],
        rater: Rater | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if self.requires_rater and rater is None:
            raise ConfigError(f"agent '{self.name}' learns from preferences and needs a rater")
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a class without a docstring of its own keeps the description it inherits
        if "description" not in cls.__dict__ and cls.__doc__:
            cls.description = first_docstring_line(cls)

    @classmethod
    def config_schema(cls) -> Schema:
        """Every allowed top-level config key -> allowed nested keys (``None``: not checked)."""
        schema: Schema = {key: None for key in COMMON_DEFAULTS}
        schema["policy_kwargs"] = POLICY_KEYS
        schema.update(cls.config_keys)
        schema.update({name: section.keys() for name, section in cls.config_sections.items()})
        return schema

    @classmethod
    def parse_sections(cls, config: Mapping[str, Any]) -> dict[str, ConfigSection]:
        """The typed sections of ``config`` (defaults filled in), validated; errors name the key."""
        return {
            name: section.from_mapping(config.get(name), name)
            for name, section in cls.config_sections.items()
        }

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
        """Preference queries counted against the budget (default: answered, the rater's count)."""
        return self.queries_answered

    @property
    def queries_asked(self) -> int:
        """Queries put to the rater so far, skipped ones included (0 without a rater)."""
        return 0 if self.rater is None else int(self.rater.num_asked)

    @property
    def queries_answered(self) -> int:
        """Labels the rater gave so far (0 without a rater)."""
        return 0 if self.rater is None else int(self.rater.num_queries)

    def metrics(self) -> dict[str, float]:
        """Agent-specific scalars for progress.csv (e.g. reward-model accuracy); none by default."""
        return {}

    @classmethod
    @abstractmethod
    def load_policy(cls, run_dir: str | Path) -> PredictFn:
        """The deterministic policy that :meth:`save` wrote into the finished run directory ``run_dir``.

        Returns ``predict(obs [n, obs_dim]) -> act [n, act_dim]`` on raw env observations, as
        :meth:`predict` with ``deterministic=True`` (what ``prefrl render --run`` rolls out).
        """

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release envs and other resources."""
