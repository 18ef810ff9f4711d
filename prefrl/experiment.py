"""One run: (env spec, agent, rater spec, seed, budgets) -> one run directory.

The run directory's layout is described in :mod:`prefrl.run_dir`.

A directory with ``done`` is skipped (resumable sweeps); a directory without it is a previous attempt that
was interrupted, and is cleared before the run starts again, so halves of two attempts never mix. A failed
run leaves ``error.txt`` with the traceback.
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.utils import set_random_seed

from prefrl.agents.registry import get_agent_class, make_agent
from prefrl.config import load_agent_config
from prefrl.envs import EnvSpec, load_env_spec
from prefrl.errors import ConfigError
from prefrl.evaluation import ProgressHook
from prefrl.oracle.loading import with_oracle_anchors
from prefrl.raters import Rater, make_rater
from prefrl.run_dir import (
    default_run_dir,
    is_done,
    load_run_env_spec,
    mark_done,
    prepare_run_dir,
    write_env_spec,
    write_json,
)
from prefrl.spec_utils import PROJECT_ROOT

logger = logging.getLogger(__name__)

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
    """
    # a spec without anchors (a user spec) is normalised with those its trained oracle measured
    env_spec = with_oracle_anchors(load_env_spec(env))
    run = resolve_run(env_spec, agent, rater, seed, steps, queries, overrides, eval_freq, n_eval_episodes)
    run_dir = Path(out) if out is not None else default_run_dir(run["env"], agent, run["rater"], seed)
    if is_done(run_dir):
        _warn_if_config_differs(run_dir, run)
        logger.info("%s: already done, skipping", run_dir)
        return run_dir
    prepare_run_dir(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(run, sort_keys=False))
    write_env_spec(run_dir, env_spec)
    start = time.time()
    meta: dict[str, Any] = {
        **_git_commit(),
        "packages": _package_versions(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "command": sys.argv,
        "start_time": datetime.fromtimestamp(start, UTC).isoformat(),
    }
    write_json(run_dir / "meta.json", meta)
    try:
        rater_object = rater if isinstance(rater, Rater) and run["rater"] != "none" else None
        _train(run, run_dir, progress_bar, rater_object)
    except BaseException:
        (run_dir / "error.txt").write_text(traceback.format_exc())
        raise
    meta.update(end_time=datetime.now(UTC).isoformat(), wall_s=round(time.time() - start, 3))
    write_json(run_dir / "meta.json", meta)
    mark_done(run_dir, meta["end_time"] + "\n")
    return run_dir


def _train(
    run: Mapping[str, Any], run_dir: Path, progress_bar: bool | None, rater: Rater | None = None
) -> None:
    env_spec = load_run_env_spec(run_dir)
    config = run["config"]
    seed = run["seed"]
    set_random_seed(seed)
    if rater is None and run["rater"] != "none":
        rater = make_rater(run["rater"], env_spec)
    agent = make_agent(run["agent"], env_spec, config, rater=rater, seed=seed)
    if progress_bar is not None:
        agent.progress_bar = progress_bar
    hook = ProgressHook(env_spec, config["eval_freq"], config["n_eval_episodes"], seed, run_dir=run_dir)
    try:
        agent.learn(run["steps"], run["queries"], hook)
        agent.save(run_dir / "policy.zip")
    finally:
        hook.close()
        agent.close()


def _warn_if_config_differs(run_dir: Path, run: Mapping[str, Any]) -> None:
    try:
        stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return
    if stored != json.loads(json.dumps(run)):
        differing = sorted(k for k in run if not isinstance(stored, dict) or stored.get(k) != run[k])
        warnings.warn(
            f"{run_dir} is done but was run with a different config ({', '.join(differing)}); "
            "skipping it - delete the directory to run again",
            stacklevel=3,
        )
