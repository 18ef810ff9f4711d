"""Agent registry: ``make_agent(name, ...)`` builds any registered agent by its name.

Agent modules register their classes with the :func:`register_agent` decorator. The built-in modules
(:data:`BUILTIN_MODULES`) are imported on first use, so ``make_agent("spo", ...)`` works without
importing ``prefrl.agents.spo`` first (and this module imports none of them: they import it).

Third-party packages add agents without any import by the user: an entry point in the group
``prefrl.agents`` naming an :class:`Agent` subclass (``[project.entry-points."prefrl.agents"]
my_agent = "my_package.agents:MyAgent"``) is loaded with the built-ins. A plugin that fails to load is
skipped with a warning, so one broken package does not take prefrl down.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

from prefrl.agents.base import Agent
from prefrl.errors import SpecError
from prefrl.spec_utils import suggest

if TYPE_CHECKING:
    from prefrl.envs import EnvSpec
    from prefrl.raters.base import Rater

__all__ = [
    "BUILTIN_MODULES",
    "get_agent_class",
    "list_agents",
    "make_agent",
    "register_agent",
]

#: modules under prefrl/agents/ that define built-in agents (missing ones are skipped)
BUILTIN_MODULES = ("ppo", "rm_ppo", "heron", "spo", "sac", "pebble", "cpl", "p_iql", "bc")
#: entry-point group of third-party agents
ENTRY_POINT_GROUP = "prefrl.agents"

_REGISTRY: dict[str, type[Agent]] = {}
_builtins_loaded = False

A = TypeVar("A", bound=type[Agent])


def register_agent(cls: A) -> A:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"register_agent expects an Agent subclass, got {cls!r}")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"agent name '{cls.name}' is already registered by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in BUILTIN_MODULES:
        # a module that is not written yet is skipped; an error inside an existing one is raised
        if importlib.util.find_spec(f"{__package__}.{module}") is not None:
            importlib.import_module(f"{__package__}.{module}")
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_agent(entry.load())
        except Exception as e:  # a third-party plugin's failure must not break the built-ins
            warnings.warn(f"agent plugin '{entry.name}' ({entry.value}) not loaded: {e}", stacklevel=2)


def list_agents() -> list[str]:
    """Names of all registered agents, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_agent_class(name: str) -> type[Agent]:
    """The agent class registered as ``name``; unknown names raise :class:`SpecError` with a hint."""
    _load_builtins()
    if name not in _REGISTRY:
        available = ", ".join(sorted(_REGISTRY))
        raise SpecError(f"unknown agent '{name}'{suggest(name.lower(), _REGISTRY)}; available: {available}")
    return _REGISTRY[name]


def make_agent(
    name: str,
    env_spec: EnvSpec,
    config: Mapping[str, Any],
    rater: Rater | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Agent:
    """Build the agent registered as ``name`` (``config`` from :func:`prefrl.config.load_agent_config`)."""
    return get_agent_class(name)(env_spec, config, rater=rater, seed=seed, device=device)
