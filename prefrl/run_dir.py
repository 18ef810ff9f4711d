"""The run directory: where one run's outputs live, and the few rules that make sweeps resumable.

A run directory holds::

    config.yaml    resolved config + env, agent, rater spec, seed, budgets
    env.yaml       the full env spec the run was trained on (reloaded from here, never by name)
    meta.json      git commit, package versions, hostname, start/end time
    progress.csv   one row per evaluation (true return, normalised score, queries, agent metrics, losses)
    tb/            TensorBoard events
    policy.zip     the final policy (``Agent.save``; read back by ``Agent.load_policy``)
    reward_model.json / .pt   the learned reward of rm_ppo / heron (``prefrl.load_reward_model``)
    done           written last, atomically: the run finished
    error.txt      the traceback of a failed attempt

This module knows the layout only; :mod:`prefrl.experiment` runs an agent into it, :mod:`prefrl.sweep`
runs grids of them and :mod:`prefrl.analysis` reads them back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from prefrl.envs import EnvSpec, load_env_spec, load_env_spec_file
from prefrl.errors import RunDirError

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_RUNS_ROOT",
    "DONE_FILE",
    "ENV_SPEC_FILE",
    "default_run_dir",
    "is_done",
    "load_run_env_spec",
    "mark_done",
    "prepare_run_dir",
    "read_run_config",
    "write_atomic",
    "write_env_spec",
    "write_json",
]

logger = logging.getLogger(__name__)

#: root of the default run directories (relative to the working directory)
DEFAULT_RUNS_ROOT = Path("runs")
#: the resolved run description
CONFIG_FILE = "config.yaml"
#: the env spec the run was trained on
ENV_SPEC_FILE = "env.yaml"
#: the marker of a finished run
DONE_FILE = "done"
#: files that mark a directory as a prefrl run directory (safe to clear when unfinished)
RUN_MARKERS = (CONFIG_FILE, "meta.json")


def _path_part(text: str) -> str:
    # rater specs such as "mistake:eps=0.2" become one safe path component
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "none"


def default_run_dir(
    env: str, agent: str, rater: str | None, seed: int, root: str | Path = DEFAULT_RUNS_ROOT
) -> Path:
    """``<root>/<env>/<agent>/<rater or none>/seed<seed>``."""
    return Path(root) / _path_part(env) / _path_part(agent) / _path_part(rater or "none") / f"seed{seed}"


def is_done(run_dir: str | Path) -> bool:
    """True if ``run_dir`` holds a finished run (its ``done`` marker)."""
    return (Path(run_dir) / DONE_FILE).is_file()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def mark_done(run_dir: Path, text: str) -> None:
    """Write the ``done`` marker last and atomically: a run directory with it is complete."""
    write_atomic(run_dir / DONE_FILE, text)


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir``; clear it if it holds an unfinished attempt; refuse foreign non-empty dirs."""
    if run_dir.exists():
        if not run_dir.is_dir():
            raise RunDirError(f"run directory {run_dir} exists and is not a directory")
        if any(run_dir.iterdir()):
            if not any((run_dir / marker).exists() for marker in RUN_MARKERS):
                raise RunDirError(
                    f"{run_dir} is not empty and is not a prefrl run directory; choose another --out"
                )
            logger.warning("%s: clearing an unfinished previous attempt", run_dir)
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The run description stored in ``run_dir/config.yaml`` (env, agent, rater, seed, budgets, config).

    :raises RunDirError: the file is missing, not YAML, or not a run description
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        run = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG_FILE})") from None
    except yaml.YAMLError as e:
        raise RunDirError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(run, dict) or not {"env", "agent"} <= run.keys():
        raise RunDirError(f"{path}: not a prefrl run description (needs at least 'env' and 'agent')")
    return run


def write_env_spec(run_dir: Path, spec: EnvSpec) -> None:
    """Store the full resolved env spec in ``run_dir/env.yaml`` (atomically)."""
    write_atomic(Path(run_dir) / ENV_SPEC_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))


def load_run_env_spec(run_dir: str | Path) -> EnvSpec:
    """The env spec a run was trained on: its ``env.yaml``; runs written before it existed reload by name.

    :raises RunDirError: not a run directory
    :raises SpecError: the stored spec is invalid (or, for an old run, its name is unknown)
    """
    path = Path(run_dir) / ENV_SPEC_FILE
    if path.is_file():
        return load_env_spec_file(path, notice=False)
    return load_env_spec(read_run_config(run_dir)["env"])
