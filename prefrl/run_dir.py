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

and, beside it, ``.<name>.lock`` while a process writes into it (:class:`RunLock`).

**Locks.** A run directory is written by one process at a time: :class:`RunLock` holds an exclusive
``flock`` on ``.<name>.lock`` (next to the directory, so clearing the directory keeps it) for the whole
run, and records the holder's pid, host and start time in it for messages. The kernel drops a ``flock``
when its holder dies, however it dies, so a lock left by a crashed or killed run is stale by construction:
the next run takes it over (with a log line) and restarts that run cleanly. The lock file is removed on
release. Two sweeps on one output folder therefore split the grid: a run whose lock is held elsewhere
raises :class:`RunDirLockedError` and the sweep moves on.

Caveat: ``flock`` is reliable on local filesystems. On NFS (Linux clients emulate it with NFS byte-range
locks) it works across hosts when the server supports locking, but a lock of a crashed *host* is only
freed when the server's lease expires; some network filesystems do not support it at all, and then the
lock falls back to the recorded pid (a holder on another host is assumed alive, and there is a short race
between two starters). A Ray cluster writing to shared storage is subject to the same limits.

**Settings identity.** ``config.yaml`` records ``settings_hash``, the SHA-256 of the canonical JSON of
everything that decides what the run computes (the run description plus the full env spec; see
:func:`settings_hash`); :func:`differing_keys` names what differs between two settings, and
:func:`beside_dir` is where a run with other settings goes when it is to be kept next to a finished one.

This module knows the layout only; :mod:`prefrl.experiment` runs an agent into it, :mod:`prefrl.sweep`
runs grids of them and :mod:`prefrl.analysis` reads them back.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from prefrl.atomic_files import write_atomic
from prefrl.envs import EnvSpec, load_env_spec, load_env_spec_file
from prefrl.errors import RunDirError

try:
    import fcntl
except ImportError:  # not a POSIX system: locks fall back to the recorded pid
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_RUNS_ROOT",
    "DONE_FILE",
    "ENV_SPEC_FILE",
    "SETTINGS_HASH_KEY",
    "RunDirLockedError",
    "RunLock",
    "beside_dir",
    "default_run_dir",
    "differing_keys",
    "exclusive_lock",
    "is_done",
    "load_run_env_spec",
    "lock_path",
    "mark_done",
    "prepare_run_dir",
    "read_run_config",
    "settings_hash",
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
#: the key of config.yaml that identifies the run's settings (:func:`settings_hash`)
SETTINGS_HASH_KEY = "settings_hash"
#: hex digits of the settings hash in the name of a run kept beside another (:func:`beside_dir`)
BESIDE_HASH_CHARS = 8


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


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def mark_done(run_dir: Path, text: str) -> None:
    """Write the ``done`` marker last and atomically: a run directory with it is complete."""
    write_atomic(run_dir / DONE_FILE, text)


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


def prepare_run_dir(run_dir: Path, lock: RunLock | None = None) -> None:
    """Create ``run_dir``; clear it if it holds an unfinished attempt; refuse foreign non-empty dirs.

    A directory is only cleared under its lock, so a run in progress elsewhere is never wiped: pass the
    :class:`RunLock` the caller holds for the run, or none and the lock is taken for the clearing.

    :raises RunDirLockedError: another live process holds the directory's lock
    :raises RunDirError: not a directory, a non-empty directory that is not a run directory, or a
        finished run (delete it to run again)
    """
    if lock is None:
        with RunLock(run_dir) as held:
            prepare_run_dir(run_dir, held)
        return
    if not lock.held or lock.path != lock_path(run_dir):
        raise RuntimeError(f"prepare_run_dir({run_dir}): the lock given is not this directory's held lock")
    if run_dir.exists():
        if not run_dir.is_dir():
            raise RunDirError(f"run directory {run_dir} exists and is not a directory")
        if is_done(run_dir):
            raise RunDirError(f"{run_dir} holds a finished run; delete it to run it again")
        if any(run_dir.iterdir()):
            if not any((run_dir / marker).exists() for marker in RUN_MARKERS):
                raise RunDirError(
                    f"{run_dir} is not empty and is not a prefrl run directory; choose another --out"
                )
            logger.warning("%s: clearing an unfinished previous attempt", run_dir)
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------------


class RunDirLockedError(RunDirError):
    """Another live process holds the run directory's lock (a run or a sweep is writing it)."""


def lock_path(run_dir: str | Path) -> Path:
    """The lock file of ``run_dir``: ``.<name>.lock`` in its parent (it outlives clearing the directory)."""
    path = Path(os.path.abspath(run_dir))
    return path.parent / f".{path.name}.lock"


#: attempts at locking a lock file that keeps being replaced under us (released and removed meanwhile)
_LOCK_ATTEMPTS = 20
#: errors of ``flock`` on a filesystem that does not support it (some network filesystems)
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _flock(fd: int, blocking: bool) -> bool | None:
    """Lock ``fd`` exclusively: True if locked, False if another holder has it, None if unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in _NO_FLOCK:
            return None
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    """``fd`` is still the file at ``path`` (a releasing holder removes the file it locked)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 65536, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _holder_alive(holder: Mapping[str, Any]) -> bool:
    """Whether the recorded holder may still run (a holder on another host cannot be checked: yes)."""
    if holder.get("hostname") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (KeyError, TypeError, ValueError):
        return False  # no usable pid: nothing can hold it
    except PermissionError:
        return True  # alive, another user's
    return True


def _describe_holder(holder: Mapping[str, Any] | None) -> str:
    if not holder:
        return "another process"
    since = f" since {holder['start_time']}" if holder.get("start_time") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('hostname', '?')}{since}"


class RunLock:
    """The exclusive lock of one run directory, held while a process writes into it.

    ``with RunLock(run_dir):`` (or :meth:`acquire` / :meth:`release`). Acquiring never waits: a lock held
    by a live process raises :class:`RunDirLockedError` at once, naming its holder; a stale one (its
    holder died) is taken over with a log line. See the module docstring for how it works and its limits
    on network filesystems.

    :param run_dir: the run directory (it need not exist yet; its parent is created)
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = lock_path(run_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """This object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (returns ``self``).

        :raises RunDirLockedError: another live process holds it
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(_LOCK_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _flock(fd, blocking=False)
                holder = _read_holder(fd)
                if locked is False or (locked is None and holder is not None and _holder_alive(holder)):
                    raise RunDirLockedError(
                        f"{self.run_dir} is in use by {_describe_holder(holder)} (a run or sweep writing "
                        "it); it is left to that process"
                    )
                if locked and not _same_file(fd, self.path):
                    os.close(fd)  # locked the file its last holder had just removed: lock the new one
                    continue
                if holder is not None:
                    logger.warning(
                        "%s: taking over a stale lock of %s (its holder is gone)",
                        self.run_dir,
                        _describe_holder(holder),
                    )
                record = {
                    "pid": os.getpid(),
                    "hostname": socket.gethostname(),
                    "start_time": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self
        raise RunDirError(f"{self.run_dir}: could not lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # removed while still locked, so a waiting process cannot lock the old file after us
            if _same_file(fd, self.path):
                self.path.unlink()
        except OSError as e:
            logger.warning("%s: could not remove the lock file: %s", self.path, e)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold a blocking exclusive ``flock`` on ``path`` (created if missing, kept) for the ``with`` block.

    For short read-modify-write sections shared by concurrent processes (a sweep's ``sweep.json`` and
    ``failures.csv``). Where the filesystem has no ``flock`` the block runs unlocked.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _flock(fd, blocking=True) is None:
            logger.debug("%s: no flock on this filesystem; writing unlocked", path)
        yield
    finally:
        os.close(fd)  # closing drops the lock


# --------------------------------------------------------------------------------------------------
# Settings identity
# --------------------------------------------------------------------------------------------------


def _plain(data: Any) -> Any:
    """``data`` as JSON would give it back (tuples as lists, keys as strings), so stored and new compare."""
    return json.loads(json.dumps(data, default=str))


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``settings`` (sorted keys, no whitespace)."""
    text = json.dumps(_plain(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


_MISSING = object()


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [k for key in keys for k in _diff(a.get(key, _MISSING), b.get(key, _MISSING), f"{path}{key}.")]
    return [] if a == b and a is not _MISSING and b is not _MISSING else [path.rstrip(".")]


def differing_keys(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The dotted keys (``steps``, ``config.ppo.learning_rate``) whose values differ between two settings.

    Nested mappings are compared key by key; lists and scalars as a whole; a key present in only one of
    them differs.
    """
    return _diff(_plain(stored), _plain(new), "")


def beside_dir(run_dir: str | Path, digest: str) -> Path:
    """Where a run with settings hash ``digest`` goes next to ``run_dir``: ``<run_dir>-<first 8 hex>``."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f"{run_dir.name}-{digest[:BESIDE_HASH_CHARS]}")
