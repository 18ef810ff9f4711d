"""Agent configs: ``agents/<name>.yaml`` (rl-zoo convention) merged and validated.

An agent YAML holds ``defaults:`` and ``envs: {<env spec name>: {...}}``. The resolved config is, in
increasing priority: :data:`prefrl.agents.base.COMMON_DEFAULTS` < ``defaults`` < ``envs.<env>`` < user
overrides; nested mappings (``ppo``, ``policy_kwargs``, ...) merge key by key. Every key is checked
against the agent's schema (:meth:`prefrl.agents.base.Agent.config_schema`), so a misspelling fails
before any training with the file, the key and a "did you mean" hint.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from prefrl.agents.base import COMMON_DEFAULTS
from prefrl.agents.registry import get_agent_class
from prefrl.envs import list_env_specs
from prefrl.errors import ConfigError, SpecError
from prefrl.spec_utils import check_keys, deep_update, load_yaml, parse_value, shipped_spec_dir, suggest

#: where the built-in agent YAMLs live (the checkout's agents/, or the wheel's copy)
AGENTS_DIR = shipped_spec_dir("agents")


def agent_config_path(agent_name: str) -> Path | None:
    """The agent's YAML: its class's ``config_file``, else ``agents/<agent_name>.yaml``; ``None`` if neither.

    An agent without a YAML (a third-party agent may have none) runs on its config sections' defaults.
    """
    config_file = get_agent_class(agent_name).config_file
    if config_file is not None:
        return Path(config_file)
    path = AGENTS_DIR / f"{agent_name}.yaml"
    return path if path.is_file() else None


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    """Check ``config`` keys against ``schema`` (key -> nested allowed keys, nested schema or ``None``)."""
    check_keys(config, schema, where)
    for key, allowed in schema.items():
        value = config.get(key)
        if allowed is None or value is None:
            continue
        if isinstance(allowed, Mapping):
            validate_config(value, allowed, f"{where}: {key}")
        else:
            check_keys(value, allowed, f"{where}: {key}")


def _check_env_names(env_overrides: Mapping[str, Any], where: str) -> None:
    # a misspelt env name would silently drop its overrides; warn rather than fail, because an agent
    # YAML may carry settings for env specs that are not installed in this checkout

    known = list_env_specs()
    for name in env_overrides:
        if name not in known:
            warnings.warn(
                f"{where}: no env spec named '{name}'{suggest(str(name), known)}; its overrides are unused",
                stacklevel=3,
            )


def load_agent_config(
    agent_name: str,
    env_name: str,
    overrides: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
) -> dict[str, Any]:
    """The resolved config of ``agent_name`` on env spec ``env_name``.

    :param agent_name: registered agent name (its YAML is :func:`agent_config_path` unless ``path``)
    :param env_name: env spec name (``"pendulum"``), the key looked up under ``envs:``
    :param overrides: user overrides, merged last (nested mappings merge)
    :param path: a different agent YAML
    :raises SpecError: unknown agent, malformed file, or an unknown key (naming the file and the key)
    """
    cls = get_agent_class(agent_name)
    path = agent_config_path(agent_name) if path is None else Path(path)
    data = {} if path is None else load_yaml(path)
    where = str(path) if path is not None else f"agent '{agent_name}'"
    check_keys(data, ("defaults", "envs"), where)
    schema = cls.config_schema()
    defaults = data.get("defaults") or {}
    validate_config(defaults, schema, f"{where}: defaults")
    env_overrides = data.get("envs") or {}
    if not isinstance(env_overrides, Mapping):
        raise SpecError(f"{where}: envs: expected a mapping of env spec name -> overrides")
    _check_env_names(env_overrides, f"{where}: envs")
    for env_key, env_config in env_overrides.items():
        validate_config(env_config or {}, schema, f"{where}: envs.{env_key}")
    config = deep_update(COMMON_DEFAULTS, defaults)
    config = deep_update(config, env_overrides.get(env_name) or {})
    if overrides:
        validate_config(overrides, schema, f"overrides for agent '{agent_name}'")
        config = deep_update(config, overrides)
    # typed sections: every default filled in (so config.yaml shows what ran), every value checked now
    for name, section in cls.parse_sections(config).items():
        config[name] = section.to_dict()
    return config


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["ppo.learning_rate=3e-4", "n_envs=2"]`` -> nested dict with YAML-parsed values (``--set``)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. ppo.learning_rate=3e-4), got '{item}'")
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _parse_override_value(value)
    return overrides


def _parse_override_value(raw: str) -> Any:
    """Numbers and booleans as the rater grammar parses them (``3e-4`` is a float, which YAML 1.1
    would keep a string), anything else (lists, mappings, strings) as YAML."""
    value = parse_value(raw)
    return yaml.safe_load(raw) if isinstance(value, str) else value
