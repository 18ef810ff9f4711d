"""One run: (env spec, agent, rater spec, seed, budgets) -> one run directory.

The run directory's layout is described in :mod:`prefrl.run_dir`.

* A directory with ``done`` and the same settings is skipped (resumable sweeps). The settings are
  identified by their hash (:class:`RunSettings`, recorded in ``config.yaml``); a finished run with other
  settings stops the run with one line naming the keys that differ (:func:`compare_finished_run`), or,
  with ``beside=True``, the new run goes next to it (``<run_dir>-<hash>``, :func:`prefrl.run_dir.beside_dir`).
* A directory without ``done`` is a previous attempt that was interrupted: it is cleared before the run
  starts again, so halves of two attempts never mix.
* The run holds the directory's lock (:class:`prefrl.run_dir.RunLock`) from before the clearing to the
  ``done`` marker: a directory another live process is writing is neither cleared nor trained twice
  (:class:`prefrl.run_dir.RunDirLockedError`).
* A failed run leaves ``error.txt`` with the traceback.
"""

from __future__ import annotations

import logging
import platform
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.utils import set_random_seed

from prefrl.agents.base import resolve_device
from prefrl.agents.registry import get_agent_class, make_agent
from prefrl.config import check_budgets, load_agent_config
from prefrl.envs import EnvSpec, load_env_spec
from prefrl.errors import ConfigError
from prefrl.evaluation import ProgressHook
from prefrl.oracle.loading import with_oracle_anchors
from prefrl.raters import Rater, make_rater
from prefrl.run_dir import (
    CONFIG_FILE,
    ENV_SPEC_FILE,
    SETTINGS_HASH_KEY,
    RunLock,
    beside_dir,
    default_run_dir,
    differing_keys,
    is_done,
    load_run_env_spec,
    mark_done,
    prepare_run_dir,
    read_run_config,
    settings_hash,
    write_env_spec,
    write_json,
)
from prefrl.spec_utils import PROJECT_ROOT

__all__ = [
    "RunAttempt",
    "RunSettings",
    "attempt_run",
    "compare_finished_run",
    "rater_label",
    "resolve_run",
    "resolve_settings",
    "run_experiment",
    "settings_conflict_message",
]

logger = logging.getLogger(__name__)

#: differing keys named in a message before the rest is only counted
_KEYS_SHOWN = 6

#: packages whose versions are recorded in meta.json
_PACKAGES = ("prefrl", "torch", "gymnasium", "mujoco", "stable-baselines3", "numpy")


def _git_commit() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _check_budget(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or int(value) != value:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def rater_label(rater: str | Rater | None) -> str:
    """How a run records its rater: the spec string, or the ``repr`` of a :class:`Rater` object."""
    if rater is None:
        return "none"
    return rater if isinstance(rater, str) else repr(rater)


def resolve_run(
    env: str | Path | EnvSpec,
    agent: str,
    rater: str | Rater | None,
    seed: int,
    steps: int | None = None,
    queries: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    eval_freq: int | None = None,
    n_eval_episodes: int | None = None,
) -> dict[str, Any]:
    """Validate every input and return the resolved run description (what config.yaml stores).

    Raises :class:`~prefrl.errors.ConfigError` (or the rater's error) for any invalid input, before
    anything is trained. A rater given to an agent that needs none is dropped with a warning (recorded as
    ``"none"``), so a sweep may pair every agent with every rater. A :class:`Rater` object is recorded by
    its ``repr`` (:func:`rater_label`).
    """
    env_spec = load_env_spec(env)
    agent_cls = get_agent_class(agent)
    if isinstance(rater, str) and rater.strip().lower() in ("", "none"):
        rater = None
    if rater is not None and not agent_cls.requires_rater:
        warnings.warn(
            f"agent '{agent}' does not use preferences; ignoring rater '{rater_label(rater)}' "
            "(recorded as 'none')",
            stacklevel=3,
        )
        rater = None
    if rater is None and agent_cls.requires_rater:
        raise ConfigError(f"agent '{agent}' learns from preferences and needs a rater (e.g. partial_return)")
    config = load_agent_config(agent, env_spec.name, overrides)
    if eval_freq is not None:
        config["eval_freq"] = eval_freq
    if n_eval_episodes is not None:
        config["n_eval_episodes"] = n_eval_episodes
    for key in ("eval_freq", "n_eval_episodes"):
        if _check_budget(config[key], key) == 0:
            raise ConfigError(f"{key} must be positive, got {config[key]!r}")
    total_steps = _check_budget(config["total_steps"] if steps is None else steps, "steps")
    query_budget = _check_budget(config["queries"] if queries is None else queries, "queries")
    check_budgets(env_spec, total_steps, query_budget)  # bounds, and the queries' memory
    # the budgets actually used, so config.yaml never shows two different ones
    config["total_steps"], config["queries"] = total_steps, query_budget
    if isinstance(rater, str):
        make_rater(rater, env_spec)  # validates the rater spec now rather than after training starts
    elif rater is not None and not isinstance(rater, Rater):
        raise ConfigError(f"rater must be a spec string or a prefrl Rater object, got {type(rater).__name__}")
    return {
        "env": env_spec.name,
        "agent": agent,
        "rater": rater_label(rater),
        "seed": int(seed),
        "steps": total_steps,
        "queries": query_budget,
        "config": config,
    }


@dataclass(frozen=True, eq=False)
class RunSettings:
    """Everything that decides what a run computes: its run description and its full env spec.

    :param env_spec: the env spec the run trains on (with its oracle's anchors, as stored in env.yaml)
    :param run: the resolved run description (:func:`resolve_run`; what config.yaml stores)
    """

    env_spec: EnvSpec
    run: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data: the run description and the env spec under ``env_spec``."""
        return {**self.run, "env_spec": self.env_spec.to_dict()}

    @cached_property
    def digest(self) -> str:
        """The settings hash (:func:`prefrl.run_dir.settings_hash`): equal hashes, the same run."""
        return settings_hash(self.as_dict())

    def with_seed(self, seed: int) -> RunSettings:
        """The same settings for another seed."""
        return RunSettings(self.env_spec, {**self.run, "seed": int(seed)})


@dataclass(frozen=True)
class RunAttempt:
    """What :func:`attempt_run` did: the run directory, and whether this call trained it (False: it was
    already done with the same settings)."""

    run_dir: Path
    trained: bool


def resolve_settings(
    env: str | Path | EnvSpec,
    agent: str,
    rater: str | Rater | None,
    seed: int,
    steps: int | None = None,
    queries: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    eval_freq: int | None = None,
    n_eval_episodes: int | None = None,
) -> RunSettings:
    """The :class:`RunSettings` of a run: env spec with anchors, run description (:func:`resolve_run`).

    Arguments as :func:`run_experiment`; invalid input raises before anything is written.
    """
    # a spec without anchors (a user spec) is normalised with those its trained oracle measured
    env_spec = with_oracle_anchors(load_env_spec(env))
    run = resolve_run(env_spec, agent, rater, seed, steps, queries, overrides, eval_freq, n_eval_episodes)
    return RunSettings(env_spec, run)


def _stored_env_spec(run_dir: Path) -> Any:
    try:
        return yaml.safe_load((run_dir / ENV_SPEC_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None


def compare_finished_run(run_dir: str | Path, settings: RunSettings) -> list[str] | None:
    """How the finished run in ``run_dir`` differs from ``settings``.

    :returns: ``None`` if ``run_dir`` holds no finished run; ``[]`` if it was run with the same settings;
        otherwise the differing keys, dotted (``steps``, ``config.ppo.learning_rate``,
        ``env_spec.kwargs.g``). A run from before settings hashes is compared on its config.yaml alone.
    :raises RunDirError: the finished run's config.yaml is missing or damaged
    """
    run_dir = Path(run_dir)
    if not is_done(run_dir):
        return None
    stored = read_run_config(run_dir)
    recorded = stored.pop(SETTINGS_HASH_KEY, None)
    if recorded is None:
        return differing_keys(stored, settings.run)
    if recorded == settings.digest:
        return []
    # an equal key-by-key comparison means only the representation changed: the same settings
    return differing_keys({**stored, "env_spec": _stored_env_spec(run_dir)}, settings.as_dict())


def _format_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    return shown + (f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else "")


def settings_conflict_message(run_dir: str | Path, keys: list[str], count: int = 1) -> str:
    """One line: ``run_dir`` (and ``count - 1`` others) holds a finished run with other ``keys``."""
    if count == 1:
        where, them, runs = f"{run_dir} holds a finished run", "it", "run next to it"
    else:
        where, them = f"{count} run directories (e.g. {run_dir}) hold finished runs", "them"
        runs = "runs next to them"
    return (
        f"{where} with other settings (differing: {_format_keys(keys)}); delete {them}, choose another "
        f"--out, or pass --beside (beside=True) to write the new {runs}"
    )


def _settled_run_dir(run_dir: Path, settings: RunSettings, beside: bool) -> Path:
    """``run_dir``, or the directory beside it when it is finished with other settings and ``beside``.

    :raises ConfigError: the finished run has other settings and ``beside`` is off
    """
    differing = compare_finished_run(run_dir, settings)
    if not differing:
        return run_dir
    if not beside:
        raise ConfigError(settings_conflict_message(run_dir, differing))
    other = beside_dir(run_dir, settings.digest)
    again = compare_finished_run(other, settings)
    if again:
        raise ConfigError(settings_conflict_message(other, again))
    logger.info(
        "%s is finished with other settings (%s): this run goes beside it, to %s",
        run_dir,
        _format_keys(differing),
        other,
    )
    return other


def run_experiment(
    env: str | Path | EnvSpec,
    agent: str,
    rater: str | Rater | None,
    seed: int,
    steps: int | None = None,
    queries: int | None = None,
    out: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    eval_freq: int | None = None,
    n_eval_episodes: int | None = None,
    progress_bar: bool | None = None,
    beside: bool = False,
    device: str = "auto",
) -> Path:
    """Train ``agent`` on ``env`` with ``rater`` and write one run directory; return its path.

    :param env: env spec name, gymnasium id of a spec, path to a spec file, ``"gym:<id>"`` or an
        :class:`~prefrl.envs.EnvSpec` (the resolved spec is stored in the run directory as ``env.yaml``)
    :param agent: registered agent name
    :param rater: rater spec string (``prefrl.raters.make_rater``), a :class:`~prefrl.raters.Rater`
        object, or ``None``/``"none"``
    :param seed: run seed (same seed -> same returns in progress.csv)
    :param steps: env-step budget (default: the config's ``total_steps``)
    :param queries: query budget (default: the config's ``queries``)
    :param out: the run directory (default :func:`default_run_dir` under ``runs/``)
    :param overrides: agent config overrides (nested dict, merged last)
    :param eval_freq: env steps between evaluations (overrides the config)
    :param n_eval_episodes: episodes per evaluation (overrides the config)
    :param progress_bar: show a progress bar (default: when stdout is a terminal)
    :param beside: when ``out`` holds a finished run with other settings, write this run next to it
        (``<out>-<settings hash>``) instead of stopping
    :param device: torch device, ``auto`` (CUDA where available and it pays for the agent), ``cpu`` or
        ``cuda[:k]`` (:func:`prefrl.agents.base.resolve_device`); recorded in ``meta.json``, not a setting
        (a run resumed on another device is the same run)
    :returns: the run directory (``out``, or the one beside it); a finished run with the same settings is
        returned without training
    :raises ConfigError: ``out`` holds a finished run with other settings (one line naming the keys)
    :raises RunDirLockedError: another live process is writing ``out``
    """
    return attempt_run(
        env,
        agent,
        rater,
        seed,
        steps,
        queries,
        out,
        overrides,
        eval_freq,
        n_eval_episodes,
        progress_bar,
        beside,
        device,
    ).run_dir


def attempt_run(
    env: str | Path | EnvSpec,
    agent: str,
    rater: str | Rater | None,
    seed: int,
    steps: int | None = None,
    queries: int | None = None,
    out: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    eval_freq: int | None = None,
    n_eval_episodes: int | None = None,
    progress_bar: bool | None = None,
    beside: bool = False,
    device: str = "auto",
) -> RunAttempt:
    """:func:`run_experiment`, also saying whether this call trained the run or found it done."""
    settings = resolve_settings(
        env, agent, rater, seed, steps, queries, overrides, eval_freq, n_eval_episodes
    )
    torch_device = resolve_device(device, get_agent_class(agent))
    run = settings.run
    run_dir = Path(out) if out is not None else default_run_dir(run["env"], agent, run["rater"], seed)
    run_dir = _settled_run_dir(run_dir, settings, beside)
    if is_done(run_dir):
        logger.info("%s: already done, skipping", run_dir)
        return RunAttempt(run_dir, trained=False)
    with RunLock(run_dir) as lock:
        if is_done(run_dir):
            # another process finished it between the check above and the lock
            _settled_run_dir(run_dir, settings, beside=False)
            logger.info("%s: finished meanwhile by another process, skipping", run_dir)
            return RunAttempt(run_dir, trained=False)
        prepare_run_dir(run_dir, lock)
        rater_object = rater if isinstance(rater, Rater) and run["rater"] != "none" else None
        _run_into(run_dir, settings, progress_bar, rater_object, torch_device)
    return RunAttempt(run_dir, trained=True)


def _run_into(
    run_dir: Path, settings: RunSettings, progress_bar: bool | None, rater: Rater | None, device: str
) -> None:
    """Write the run's files, train, and mark it done (the caller holds the directory's lock)."""
    start = time.time()
    meta: dict[str, Any] = {
        **_git_commit(),
        "packages": _package_versions(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "command": sys.argv,
        "device": device,
        "start_time": datetime.fromtimestamp(start, UTC).isoformat(),
    }
    try:
        stored = {**settings.run, SETTINGS_HASH_KEY: settings.digest}
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(stored, sort_keys=False))
        write_env_spec(run_dir, settings.env_spec)
        write_json(run_dir / "meta.json", meta)
        _train(settings.run, run_dir, progress_bar, rater, device)
    except BaseException:
        (run_dir / "error.txt").write_text(traceback.format_exc())
        raise
    meta.update(end_time=datetime.now(UTC).isoformat(), wall_s=round(time.time() - start, 3))
    write_json(run_dir / "meta.json", meta)
    mark_done(run_dir, meta["end_time"] + "\n")


def _train(
    run: Mapping[str, Any],
    run_dir: Path,
    progress_bar: bool | None,
    rater: Rater | None = None,
    device: str = "cpu",
) -> None:
    env_spec = load_run_env_spec(run_dir)
    config = run["config"]
    seed = run["seed"]
    set_random_seed(seed)
    if rater is None and run["rater"] != "none":
        rater = make_rater(run["rater"], env_spec)
    agent = make_agent(run["agent"], env_spec, config, rater=rater, seed=seed, device=device)
    if progress_bar is not None:
        agent.progress_bar = progress_bar
    hook = ProgressHook(env_spec, config["eval_freq"], config["n_eval_episodes"], seed, run_dir=run_dir)
    try:
        agent.learn(run["steps"], run["queries"], hook)
        agent.save(run_dir / "policy.zip")
    finally:
        hook.close()
        agent.close()
