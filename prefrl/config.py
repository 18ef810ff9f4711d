"""Agent configs: ``agents/<name>.yaml`` (rl-zoo convention) merged and validated.

An agent YAML holds ``defaults:`` and ``envs: {<env spec name>: {...}}``. The resolved config is, in
increasing priority: :data:`prefrl.agents.base.COMMON_DEFAULTS` < ``defaults`` < ``envs.<env>`` < user
overrides; nested mappings (``ppo``, ``policy_kwargs``, ...) merge key by key. Every key is checked
against the agent's schema (:meth:`prefrl.agents.base.Agent.config_schema`), so a misspelling fails
before any training with the file, the key and a "did you mean" hint. Values are checked too: the
common keys (:func:`validate_common`), ``policy_kwargs``, and the ``ppo``/``normalize`` sections that are
passed to Stable-Baselines3 (:func:`validate_ppo`), so ``gamma: 1.5`` or ``clip_range: -0.2`` stop with
one line instead of training nonsense. :func:`check_budgets` bounds the step and query budgets.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from prefrl.agents.base import COMMON_DEFAULTS
from prefrl.agents.off_policy import validate_sac
from prefrl.agents.registry import get_agent_class
from prefrl.envs import EnvSpec, list_env_specs
from prefrl.errors import ConfigError, SpecError
from prefrl.networks import activation
from prefrl.spec_utils import (
    check_int,
    check_keys,
    check_memory,
    check_range,
    check_type,
    deep_update,
    load_yaml,
    parse_value,
    shipped_spec_dir,
    suggest,
    yaml_load,
)

__all__ = [
    "AGENTS_DIR",
    "MAX_N_ENVS",
    "MAX_ROLLOUT_STEPS",
    "MAX_STEPS",
    "agent_config_path",
    "check_budgets",
    "load_agent_config",
    "parse_overrides",
    "validate_common",
    "validate_config",
    "validate_ppo",
]

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
    checked = f"agent '{agent_name}' config"
    validate_common(config, checked)
    if isinstance(config.get("ppo"), Mapping):
        validate_ppo(config["ppo"], f"{checked}: ppo", n_envs=int(config.get("n_envs", 1)))
    if isinstance(config.get("sac"), Mapping):
        validate_sac(config["sac"], f"{checked}: sac", n_envs=int(config.get("n_envs", 1)))
    if "normalize" in config:
        _validate_normalize(config["normalize"], f"{checked}: normalize")
    if "vec_env" in config and config["vec_env"] not in ("dummy", "subproc"):
        raise ConfigError(f"{checked}: vec_env: expected 'dummy' or 'subproc', got {config['vec_env']!r}")
    return config


# --------------------------------------------------------------------------------------------------
# Value checks
# --------------------------------------------------------------------------------------------------

#: the largest env-step (or gradient-step) budget a run accepts
MAX_STEPS = 10**12
#: the most parallel training envs
MAX_N_ENVS = 1024
#: the most env steps one PPO rollout may hold (``ppo.n_steps * n_envs``): its buffer lives in memory
MAX_ROLLOUT_STEPS = 10**8


def _check(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with a :class:`SpecError` raised as a :class:`ConfigError` (a config value)."""
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise
    except SpecError as e:
        raise ConfigError(str(e)) from None


def validate_common(config: Mapping[str, Any], where: str) -> None:
    """Ranges of the keys every agent has (:data:`~prefrl.agents.base.COMMON_DEFAULTS`) and policy_kwargs.

    :raises ConfigError: naming ``where`` and the key
    """
    _check(check_int, config.get("n_envs", 1), f"{where}: n_envs", 1, MAX_N_ENVS)
    _check(check_int, config.get("eval_freq", 1), f"{where}: eval_freq", 1, MAX_STEPS)
    _check(check_int, config.get("n_eval_episodes", 1), f"{where}: n_eval_episodes", 1, 100_000)
    _check(check_int, config.get("total_steps", 0), f"{where}: total_steps", 0, MAX_STEPS)
    _check(check_int, config.get("queries", 0), f"{where}: queries", 0, MAX_STEPS)
    _check(check_int, config.get("torch_threads", 1), f"{where}: torch_threads", 1, 4096)
    policy_kwargs = config.get("policy_kwargs") or {}
    _check(check_type, policy_kwargs, dict, f"{where}: policy_kwargs")
    if "net_arch" in policy_kwargs:
        _check_net_arch(policy_kwargs["net_arch"], f"{where}: policy_kwargs.net_arch")
    if "activation_fn" in policy_kwargs:
        name = _check(
            check_type, policy_kwargs["activation_fn"], str, f"{where}: policy_kwargs.activation_fn"
        )
        _check(activation, name, f"{where}: policy_kwargs.activation_fn")
    if "log_std_init" in policy_kwargs:
        _check(check_type, policy_kwargs["log_std_init"], float, f"{where}: policy_kwargs.log_std_init")
    for key in ("ortho_init", "full_std", "use_expln"):
        if key in policy_kwargs:
            _check(check_type, policy_kwargs[key], bool, f"{where}: policy_kwargs.{key}")


def _check_net_arch(value: Any, where: str) -> None:
    """Hidden sizes ``[64, 64]`` or separate ones ``{pi: [...], vf: [...]}``."""
    if isinstance(value, Mapping):
        _check(check_keys, value, ("pi", "vf"), where)
        for key, sizes in value.items():
            _check_net_arch(sizes, f"{where}.{key}")
        return
    sizes = _check(check_type, value, list, where)
    for i, size in enumerate(sizes):
        _check(check_int, size, f"{where}[{i}]", 1, 1_000_000)


#: ``lin_<start>`` or ``lin_<start>_<end>``: a linear schedule (prefrl.agents.on_policy.parse_schedule)
_SCHEDULE = re.compile(r"lin_([^_]+)(?:_([^_]+))?")


def _check_schedule(value: Any, where: str, low_open: bool = True, allow_none: bool = False) -> None:
    """A positive (``low_open``) or non-negative finite number, or a ``lin_<start>[_<end>]`` string."""
    if value is None and allow_none:
        return
    if isinstance(value, str):
        match = _SCHEDULE.fullmatch(value.strip())
        try:
            numbers = [float(value)] if match is None else [float(g) for g in match.groups() if g is not None]
        except ValueError:
            raise ConfigError(
                f"{where}: expected a number, 'lin_<start>' or 'lin_<start>_<end>', got {value!r}"
            ) from None
        _check(check_range, numbers[0], where, 0.0, None, low_open=low_open)
        _check(check_type, numbers[0], float, where)
        for end in numbers[1:]:
            _check(check_type, end, float, f"{where} (end of the schedule)")
            _check(check_range, end, f"{where} (end of the schedule)", 0.0)
        return
    number = _check(check_type, value, float, where)
    _check(check_range, number, where, 0.0, None, low_open=low_open)


def validate_ppo(ppo: Mapping[str, Any], where: str, n_envs: int = 1) -> None:
    """Ranges of the Stable-Baselines3 PPO settings a config sets (keys it does not set keep SB3's defaults).

    ``gamma`` and ``gae_lambda`` in (0, 1]; ``clip_range`` and ``learning_rate`` > 0 (or a
    ``lin_<start>[_<end>]`` schedule); ``clip_range_vf`` and ``target_kl`` > 0 or null; ``n_steps``,
    ``batch_size``, ``n_epochs`` positive integers (``batch_size`` >= 2 with ``normalize_advantage``, a
    rollout of ``n_steps * n_envs`` >= 2 steps and at most :data:`MAX_ROLLOUT_STEPS`); ``ent_coef``,
    ``vf_coef`` >= 0; ``max_grad_norm`` > 0; every float finite.

    :raises ConfigError: naming ``where`` and the key
    """
    at = f"{where}."
    for key in ("gamma", "gae_lambda"):
        if key in ppo:
            value = _check(check_type, ppo[key], float, at + key)
            _check(check_range, value, at + key, 0.0, 1.0, low_open=True)
    if "learning_rate" in ppo:
        _check_schedule(ppo["learning_rate"], at + "learning_rate")
    if "clip_range" in ppo:
        _check_schedule(ppo["clip_range"], at + "clip_range")
    if "clip_range_vf" in ppo:
        _check_schedule(ppo["clip_range_vf"], at + "clip_range_vf", allow_none=True)
    n_steps = ppo.get("n_steps", 2048)
    _check(check_int, n_steps, at + "n_steps", 1, MAX_ROLLOUT_STEPS)
    normalize_advantage = _check(
        check_type, ppo.get("normalize_advantage", True), bool, at + "normalize_advantage"
    )
    batch_size = _check(
        check_int, ppo.get("batch_size", 64), at + "batch_size", 2 if normalize_advantage else 1
    )
    _check(check_int, ppo.get("n_epochs", 10), at + "n_epochs", 1, 100_000)
    if n_steps * n_envs < 2 or n_steps * n_envs > MAX_ROLLOUT_STEPS:
        raise ConfigError(
            f"{at}n_steps: a rollout of n_steps * n_envs = {n_steps} * {n_envs} env steps must hold "
            f"between 2 and {MAX_ROLLOUT_STEPS:,}"
        )
    if batch_size > n_steps * n_envs:
        raise ConfigError(
            f"{at}batch_size: {batch_size} exceeds the rollout of n_steps * n_envs = {n_steps * n_envs} steps"
        )
    for key in ("ent_coef", "vf_coef"):
        if key in ppo:
            _check(check_range, _check(check_type, ppo[key], float, at + key), at + key, 0.0)
    if "max_grad_norm" in ppo:
        value = _check(check_type, ppo["max_grad_norm"], float, at + "max_grad_norm")
        _check(check_range, value, at + "max_grad_norm", 0.0, None, low_open=True)
    if ppo.get("target_kl") is not None:
        value = _check(check_type, ppo["target_kl"], float, at + "target_kl")
        _check(check_range, value, at + "target_kl", 0.0, None, low_open=True)
    if "use_sde" in ppo:
        _check(check_type, ppo["use_sde"], bool, at + "use_sde")
    if "sde_sample_freq" in ppo:
        _check(check_int, ppo["sde_sample_freq"], at + "sde_sample_freq", -1)
    if "stats_window_size" in ppo:
        _check(check_int, ppo["stats_window_size"], at + "stats_window_size", 1, 10**7)


#: VecNormalize's settings a config may give under ``normalize:``
_NORMALIZE_KEYS = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")


def _validate_normalize(value: Any, where: str) -> None:
    """``normalize``: a bool, or VecNormalize's settings (known keys, positive clips, gamma in (0, 1])."""
    if isinstance(value, bool):
        return
    _check(check_type, value, dict, where)
    _check(check_keys, value, _NORMALIZE_KEYS, where)
    for key in ("norm_obs", "norm_reward"):
        if key in value:
            _check(check_type, value[key], bool, f"{where}.{key}")
    for key in ("clip_obs", "clip_reward", "epsilon"):
        if key in value:
            number = _check(check_type, value[key], float, f"{where}.{key}")
            _check(check_range, number, f"{where}.{key}", 0.0, None, low_open=True)
    if "gamma" in value:
        gamma = _check(check_type, value["gamma"], float, f"{where}.gamma")
        _check(check_range, gamma, f"{where}.gamma", 0.0, 1.0, low_open=True)


def check_budgets(env_spec: EnvSpec, steps: int, queries: int) -> None:
    """Bound a run's budgets before anything is allocated.

    The env is built (and stepped once) first, so a spec gymnasium cannot run fails before the run
    directory exists. ``steps`` at most :data:`MAX_STEPS`; ``queries`` such that its labelled segment
    pairs (two segments of ``H`` steps of observations and actions, float32, per query: what a reward
    model may keep) fit in memory (:func:`prefrl.spec_utils.check_memory`, the estimate in the message).

    :raises ConfigError: naming the budget and, for queries, the estimated memory
    """
    _check(check_int, steps, "steps", 0, MAX_STEPS)
    _check(check_int, queries, "queries", 0, MAX_STEPS)
    env_spec.observation_space  # noqa: B018 (builds the env once: a spec it cannot run fails here)
    if queries == 0:
        return
    per_step = sum(
        int(np.prod(space.shape or (1,))) for space in (env_spec.observation_space, env_spec.action_space)
    )
    bytes_per_query = 2 * env_spec.segment_length * per_step * 4
    check_memory(
        queries * bytes_per_query,
        f"--queries {queries:,} ({env_spec.name}, segments of {env_spec.segment_length} steps)",
    )


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["ppo.learning_rate=3e-4", "n_envs=2"]`` -> nested dict with YAML-parsed values (``--set``)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. ppo.learning_rate=3e-4), got '{item}'")
        node = overrides
        *parents, leaf = key.split(".")
        if not all(part.strip() for part in (*parents, leaf)):
            raise ConfigError(f"--set: empty key part in '{key}' (nested keys are joined by single dots)")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set: '{part}' is given a value and nested keys at once ('{item}')")
            node = child
        node[leaf] = _parse_override_value(value, item)
    return overrides


def _parse_override_value(raw: str, item: str) -> Any:
    """Numbers and booleans as the rater grammar parses them (``3e-4`` is a float, which YAML 1.1
    would keep a string), anything else (lists, mappings, strings) as YAML."""
    value = parse_value(raw)
    if not isinstance(value, str):
        return value
    try:
        return yaml_load(raw)
    except yaml.YAMLError as e:
        reason = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigError(f"--set {item}: the value is not valid YAML ({reason})") from None
