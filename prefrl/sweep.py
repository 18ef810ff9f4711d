"""Grids of runs: env x agent x rater x seed, each an independent run directory, on a process pool or Ray.

:func:`run_sweep` expands the grid (:func:`expand_grid`), validates every cell before anything trains,
and runs the cells through :func:`prefrl.experiment.run_experiment`::

    <out>/<env>/<agent>/<rater>/seed<k>/      one run directory per cell (see prefrl.experiment)
    <out>/sweep.json                          every invocation: its grid, arguments and settings hashes
    <out>/failures.csv, failures.json         runs whose last attempt failed, with their error

* Agents that learn from no preferences (``ppo``) run once per (env, seed) with rater ``none``, not once
  per rater.
* Resume: a cell whose directory holds ``done`` with the same settings is skipped; an unfinished one is
  restarted cleanly by ``run_experiment``. Re-running the same command finishes an interrupted grid.
* Changed settings: before anything runs, every finished cell is compared with the grid's settings
  (:func:`prefrl.experiment.compare_finished_run`); if any differ the sweep stops with one line (how
  many, an example, the differing keys), or with ``beside=True`` those cells run next to the finished
  ones (``seed<k>-<settings hash>``).
* Concurrent sweeps on one ``out`` split the grid: each run holds its directory's lock
  (:class:`prefrl.run_dir.RunLock`), a cell locked by another live sweep is left to it (status
  ``"locked"``, not a failure), and ``sweep.json`` / ``failures.*`` are merged under ``out/.sweep.lock``.
* A failing run is recorded (``error.txt`` in its directory, a row in ``failures.csv``) and the sweep goes
  on with the other cells.
* SIGINT / SIGTERM stop the sweep cleanly: pending runs are cancelled, running ones are asked to stop
  (SIGTERM, unwinding through ``run_experiment``, which never leaves a ``done`` marker on an unfinished
  run), stragglers are killed after a grace period and the pool is shut down. Workers watch the sweep's
  main process: if it dies without stopping them (SIGKILL, out of memory) they stop the same way within
  a few seconds, and the lock of the run they leave unfinished is released with them.

``backend="local"`` uses a :class:`~concurrent.futures.ProcessPoolExecutor` with ``jobs`` workers (default:
the number of cores). ``backend="ray"`` submits the same cells as Ray tasks (``ray.init(address=...)``;
a local instance without an address); the run directories are identical, but on a multi-node cluster
``out`` must be on storage every node can write. Ray is the optional extra ``prefrl[ray]``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from prefrl.agents import get_agent_class
from prefrl.agents.base import resolve_device
from prefrl.atomic_files import atomic_path, write_atomic
from prefrl.envs import EnvSpec, load_env_spec
from prefrl.errors import ConfigError, SpecError
from prefrl.experiment import (
    RunSettings,
    attempt_run,
    compare_finished_run,
    resolve_run,
    resolve_settings,
    settings_conflict_message,
)
from prefrl.raters import Rater
from prefrl.run_dir import RunDirLockedError, beside_dir, default_run_dir, exclusive_lock
from prefrl.spec_utils import deep_update

logger = logging.getLogger(__name__)


def is_done(run_dir: str | Path) -> bool:
    """True if ``run_dir`` holds a finished run (its ``done`` marker; see :mod:`prefrl.experiment`)."""
    # not imported from prefrl.experiment, so that building the CLI parser does not import torch
    return (Path(run_dir) / "done").is_file()


__all__ = [
    "BACKENDS",
    "RayNotInstalledError",
    "RunCell",
    "RunOutcome",
    "SweepResult",
    "expand_grid",
    "import_ray",
    "run_sweep",
    "split_specs",
]

#: execution backends of :func:`run_sweep`
BACKENDS = ("local", "ray")

#: seconds running workers get to unwind after SIGTERM before they are killed
STOP_GRACE_S = 15.0

#: install hint for the optional Ray backend
RAY_INSTALL = "pip install 'prefrl[ray]'"

#: seconds between a worker's checks that the sweep's main process is alive
PARENT_POLL_S = 0.5

#: seconds a worker whose sweep died gets to unwind its run before it exits regardless
ORPHAN_GRACE_S = 3.0

#: the lock file that serialises writes of sweep.json and failures.* by concurrent sweeps
SWEEP_LOCK = ".sweep.lock"


class RayNotInstalledError(ImportError):
    """``backend="ray"`` was asked for but Ray is not importable."""


@dataclass(frozen=True)
class RunCell:
    """One cell of a sweep grid: everything :func:`~prefrl.experiment.run_experiment` needs.

    :param env: env spec name
    :param agent: agent name
    :param rater: rater spec, ``"none"`` for agents that need none (a rater object's ``repr``)
    :param seed: run seed
    :param run_dir: the cell's run directory
    :param settings_hash: the hash of the cell's resolved settings (set by :func:`run_sweep`)
    :param device: torch device of the run (``auto``, ``cpu``, ``cuda[:k]``; not a setting)
    :param env_spec: the resolved env spec (workers use it as is, so a spec file or ``gym:`` id is read
        once, in the parent)
    :param rater_object: the :class:`~prefrl.raters.Rater` object when the sweep was given one
    """

    env: str
    agent: str
    rater: str
    seed: int
    run_dir: str
    steps: int | None = None
    queries: int | None = None
    overrides: Mapping[str, Any] | None = None
    eval_freq: int | None = None
    n_eval_episodes: int | None = None
    settings_hash: str | None = None
    device: str = "auto"
    env_spec: EnvSpec | None = field(default=None, repr=False, compare=False)
    rater_object: Rater | None = field(default=None, repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        """The cell as plain data (``sweep.json``): the spec and rater objects are named, not dumped."""
        return {k: v for k, v in asdict(self).items() if k not in ("env_spec", "rater_object")}

    @property
    def label(self) -> str:
        """``env/agent/rater/seed<k>`` (for messages)."""
        return f"{self.env}/{self.agent}/{self.rater}/seed{self.seed}"


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one cell.

    ``status``: ``"done"`` (trained by this sweep), ``"skipped"`` (already done), ``"failed"`` (raised;
    ``error`` says why) or ``"locked"`` (another live process is running it; ``error`` names it).
    """

    cell: RunCell
    status: str
    wall_s: float = 0.0
    error: str | None = None


@dataclass
class SweepResult:
    """The outcome of :func:`run_sweep`.

    :param root: the sweep's output directory
    :param cells: every cell of the grid, in grid order
    :param outcomes: one per cell that finished, was skipped or failed in this invocation
    :param interrupted: the sweep was stopped by SIGINT/SIGTERM before the grid finished
    """

    root: Path
    cells: list[RunCell]
    outcomes: list[RunOutcome] = field(default_factory=list)
    interrupted: bool = False

    def _with(self, status: str) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def completed(self) -> list[RunOutcome]:
        """Runs trained to the end in this invocation."""
        return self._with("done")

    @property
    def skipped(self) -> list[RunOutcome]:
        """Runs already done before this invocation."""
        return self._with("skipped")

    @property
    def failed(self) -> list[RunOutcome]:
        """Runs that raised."""
        return self._with("failed")

    @property
    def locked(self) -> list[RunOutcome]:
        """Runs left to another live process (a concurrent sweep) that held their lock."""
        return self._with("locked")

    @property
    def ok(self) -> bool:
        """Every cell of the grid is done."""
        return not self.interrupted and all(is_done(c.run_dir) for c in self.cells)

    def summary(self) -> str:
        """One line: counts of done / skipped / failed / not run."""
        not_run = len(self.cells) - len(self.outcomes)
        text = (
            f"{len(self.cells)} runs: {len(self.completed)} trained, {len(self.skipped)} already done, "
            f"{len(self.failed)} failed"
        )
        if self.locked:
            text += f", {len(self.locked)} running elsewhere"
        if not_run:
            text += f", {not_run} not run"
        if self.interrupted:
            text += " (interrupted: run the same command again to resume)"
        return text


# --------------------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------------------

# a comma-separated item that starts with "key=" continues the previous rater spec's parameter list
_CONTINUATION = re.compile(r"^\s*[A-Za-z_]\w*\s*=")


def split_specs(values: str | Iterable[Any] | None) -> list[Any]:
    """Split comma-separated CLI lists, keeping rater parameters together.

    ``"ppo,spo"`` -> ``["ppo", "spo"]``; ``"partial_return,mistake:eps=0.2,beta=1"`` ->
    ``["partial_return", "mistake:eps=0.2,beta=1"]`` (an item of the form ``key=value`` belongs to the
    spec before it, as in ``gym:Hopper-v5,ctrl_cost_weight=0.01``). Repeated options (a list) are split
    and concatenated; duplicates are dropped. Objects (an :class:`EnvSpec`, a :class:`Rater`) pass
    through unchanged.
    """
    if values is None:
        return []
    if isinstance(values, str | EnvSpec | Rater):
        values = [values]
    items: list[Any] = []
    for value in values:
        if not isinstance(value, str):
            items.append(value)
            continue
        pieces: list[str] = []
        for piece in str(value).split(","):
            if pieces and _CONTINUATION.match(piece) and ":" in pieces[-1]:
                pieces[-1] += "," + piece.strip()
            elif piece.strip():
                pieces.append(piece.strip())
        items.extend(pieces)
    unique = {item if isinstance(item, str) else id(item): item for item in items}
    return list(unique.values())


#: the most runs one sweep may hold (a bound on the grid, checked before sweep.json is written)
MAX_GRID_CELLS = 10_000


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise SpecError(f"seeds must be a count or a list of ints, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise SpecError(f"seeds must be >= 1 (a count: seeds 0..n-1), got {seeds}")
        if seeds > MAX_GRID_CELLS:  # refused before the grid (and sweep.json) is built
            raise SpecError(f"seeds: {seeds:,} seeds exceed the largest sweep ({MAX_GRID_CELLS:,} runs)")
        return list(range(seeds))
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise SpecError("seeds: empty list")
    if min(seed_list) < 0 or max(seed_list) >= 2**32:
        raise SpecError(f"seeds must lie in [0, 2**32), got {min(seed_list)} .. {max(seed_list)}")
    if len(set(seed_list)) != len(seed_list):
        raise SpecError(f"seeds: duplicates in {seed_list}")
    return seed_list


def expand_grid(
    envs: str | Sequence[str],
    agents: str | Sequence[str],
    raters: str | Sequence[str] | None,
    seeds: int | Sequence[int],
    out: str | Path,
    steps: int | None = None,
    queries: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    agent_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    eval_freq: int | None = None,
    n_eval_episodes: int | None = None,
) -> list[RunCell]:
    """Every cell of the grid, validated (env, agent, config keys, rater specs) before anything runs.

    Agents with ``requires_rater = False`` get one cell per (env, seed) with rater ``"none"``; agents that
    need a rater get one per rater. ``overrides`` apply to every agent; ``agent_overrides[name]`` to one
    (merged after ``overrides``).

    :raises SpecError: unknown env/agent, bad config key, a preference agent without any rater, ...
    :raises RaterError: an invalid rater spec (checked against every env of the grid)
    """
    env_list, agent_list, rater_list = split_specs(envs), split_specs(agents), split_specs(raters)
    rater_list = [r for r in rater_list if not (isinstance(r, str) and r.lower() == "none")]
    if not env_list or not agent_list:
        raise SpecError("a sweep needs at least one env and one agent")
    seed_list = _seed_list(seeds)
    cells = len(env_list) * len(agent_list) * max(1, len(rater_list)) * len(seed_list)
    if cells > MAX_GRID_CELLS:
        raise SpecError(
            f"the grid has up to {cells:,} runs ({len(env_list)} envs x {len(agent_list)} agents x "
            f"{max(1, len(rater_list))} raters x {len(seed_list)} seeds), more than {MAX_GRID_CELLS:,}"
        )
    agent_overrides = dict(agent_overrides or {})
    unknown = set(agent_overrides) - set(agent_list)
    if unknown:
        raise SpecError(f"agent_overrides for agents not in the sweep: {', '.join(sorted(unknown))}")

    cells: list[RunCell] = []
    for env in (load_env_spec(e) for e in env_list):
        for agent in agent_list:
            cls = get_agent_class(agent)
            cell_raters: list[str | None] = rater_list if cls.requires_rater else [None]  # type: ignore[assignment]
            if cls.requires_rater and not rater_list:
                raise SpecError(f"agent '{agent}' learns from preferences: give at least one --rater")
            merged = deep_update(dict(overrides or {}), dict(agent_overrides.get(agent) or {}))
            for rater in cell_raters:
                # validates env spec, agent config (with overrides), budgets and the rater on this env
                run = resolve_run(
                    env, agent, rater, seed_list[0], steps, queries, merged, eval_freq, n_eval_episodes
                )
                for seed in seed_list:
                    cells.append(
                        RunCell(
                            env=run["env"],
                            agent=agent,
                            rater=run["rater"],
                            seed=seed,
                            run_dir=str(default_run_dir(run["env"], agent, run["rater"], seed, out)),
                            steps=steps,
                            queries=queries,
                            overrides=merged or None,
                            eval_freq=eval_freq,
                            n_eval_episodes=n_eval_episodes,
                            env_spec=env,
                            rater_object=rater if isinstance(rater, Rater) else None,
                        )
                    )
    dirs = [c.run_dir for c in cells]
    if len(set(dirs)) != len(dirs):
        # two rater specs that map to the same path component (e.g. differing only in punctuation)
        dup = sorted({d for d in dirs if dirs.count(d) > 1})
        raise SpecError(f"two grid cells share a run directory: {dup[0]}; rename one rater spec")
    return cells


# --------------------------------------------------------------------------------------------------
# Running one cell (in a worker process or a Ray task)
# --------------------------------------------------------------------------------------------------


class _Terminated(SystemExit):
    """Raised in a worker by SIGTERM so that the run unwinds through its ``finally`` blocks."""


#: set in a worker once it was asked to stop: cells it already holds in its queue are not started
_STOPPING = False


def _on_sigterm(signum: int, frame: Any) -> None:
    global _STOPPING
    _STOPPING = True
    raise _Terminated(128 + signum)


def _watch_parent(parent: int) -> None:
    """Stop this worker when the sweep's main process is gone (it was reparented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    # unwind the run as the sweep's own SIGTERM would (error.txt, no done), then leave for sure: an idle
    # worker may be blocked on a queue that nobody will ever write to again
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    os._exit(128 + signal.SIGKILL)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: only the parent reacts, and stops the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # a SIGKILLed sweep cannot stop its workers: they notice it themselves
    threading.Thread(target=_watch_parent, args=(os.getppid(),), name="watch-sweep", daemon=True).start()


def _cell_rater(cell: RunCell) -> str | Rater | None:
    return cell.rater_object or (None if cell.rater == "none" else cell.rater)


def run_cell(cell: RunCell) -> RunOutcome:
    """Run one cell with :func:`~prefrl.experiment.attempt_run`; its result becomes a :class:`RunOutcome`.

    A run finished (by anyone, with the same settings) is ``"skipped"``; one whose lock another live
    process holds is ``"locked"``; a raised exception is ``"failed"``, and training errors are also in the
    run directory's ``error.txt`` (``run_experiment`` writes it; errors raised before the directory is
    this run's, such as changed settings, are only returned).
    """
    if _STOPPING:
        raise _Terminated(128 + signal.SIGTERM)
    start = time.perf_counter()
    try:
        attempt = attempt_run(
            cell.env_spec or cell.env,
            cell.agent,
            _cell_rater(cell),
            cell.seed,
            steps=cell.steps,
            queries=cell.queries,
            out=cell.run_dir,
            overrides=cell.overrides,
            eval_freq=cell.eval_freq,
            n_eval_episodes=cell.n_eval_episodes,
            progress_bar=False,
            device=cell.device,
        )
    except RunDirLockedError as e:
        return RunOutcome(cell, "locked", error=str(e))
    except Exception as e:
        error = "".join(traceback.format_exception_only(e)).strip()
        return RunOutcome(cell, "failed", time.perf_counter() - start, error)
    return RunOutcome(cell, "done" if attempt.trained else "skipped", time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


class _StopRequested(KeyboardInterrupt):
    """SIGTERM in the sweep's main process (handled like Ctrl-C)."""


@contextmanager
def _stop_signals() -> Iterator[None]:
    """Turn SIGTERM into :class:`_StopRequested` (SIGINT already raises KeyboardInterrupt)."""

    def handler(signum: int, frame: Any) -> None:
        raise _StopRequested(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_pool(pool: ProcessPoolExecutor, grace_s: float) -> None:
    """Cancel pending work, SIGTERM the workers, wait ``grace_s``, SIGKILL what is left, shut down."""
    # the executor keeps its worker processes in a private dict; there is no public way to signal them
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            logger.warning("worker %s did not stop within %.0f s: killing it", proc.pid, grace_s)
            proc.kill()
            proc.join(5.0)
    pool.shutdown(wait=True)


def _run_local(
    cells: Sequence[RunCell], jobs: int, on_outcome: Callable[[RunOutcome], None], grace_s: float
) -> None:
    # spawn, not fork: the parent may hold threads (progress bar, torch) that a fork would copy mid-state
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        pending: set[Future[RunOutcome]] = set()
        by_future: dict[Future[RunOutcome], RunCell] = {}
        for cell in cells:
            future = pool.submit(run_cell, cell)
            by_future[future] = cell
            pending.add(future)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    outcome = future.result()
                except Exception as e:  # the worker died (killed, out of memory): record and go on
                    outcome = RunOutcome(by_future[future], "failed", error=f"worker process failed: {e!r}")
                on_outcome(outcome)
    except BaseException:
        _stop_pool(pool, grace_s)
        raise
    pool.shutdown(wait=True)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RayNotInstalledError(
            f"the Ray backend needs Ray, which is not installed ({e}); install it with: {RAY_INSTALL}"
        ) from e
    return ray


def _run_ray(
    cells: Sequence[RunCell], jobs: int | None, address: str | None, on_outcome: Callable[[RunOutcome], None]
) -> None:
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if address is None:
            # a local instance sized like the process pool; the dashboard is not needed for batch runs
            options.update(num_cpus=jobs, include_dashboard=False)
        ray.init(address=address, **options)
    # one CPU per run; no automatic retries: a failed run is recorded, not silently re-run
    remote = ray.remote(num_cpus=1, max_retries=0)(_ray_run_cell)
    refs: dict[Any, RunCell] = {remote.remote(cell): cell for cell in cells}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # the task's worker died
                    outcome = RunOutcome(refs[ref], "failed", error=f"ray task failed: {e!r}")
                on_outcome(outcome)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)  # force: kills the worker process running the task
        raise
    finally:
        if started_here:
            ray.shutdown()


def _ray_run_cell(cell: RunCell) -> RunOutcome:
    # Ray workers are long-lived processes shared by tasks: set the thread limits per task
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_cell(cell)


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------


def _same_path(a: str | Path, b: str | Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _failure_row(outcome: RunOutcome) -> dict[str, Any]:
    error_file = Path(outcome.cell.run_dir) / "error.txt"
    return {
        "env": outcome.cell.env,
        "agent": outcome.cell.agent,
        "rater": outcome.cell.rater,
        "seed": outcome.cell.seed,
        "run_dir": outcome.cell.run_dir,
        "error": outcome.error,
        "error_file": str(error_file) if error_file.is_file() else "",
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        logger.warning("%s is unreadable (%s); starting it afresh", path, e)
        return None


def _write_failures(root: Path, outcomes: Sequence[RunOutcome]) -> None:
    """Merge this sweep's failures into ``failures.csv`` / ``failures.json`` (under the sweep lock).

    A row stays until its run is attempted again or finished, whoever does it, so the failures of a
    concurrent sweep on the same folder are kept.
    """
    attempted = [o.cell.run_dir for o in outcomes if o.status != "locked"]
    with exclusive_lock(root / SWEEP_LOCK):
        previous = _read_json(root / "failures.json")
        rows = [
            row
            for row in (previous if isinstance(previous, list) else [])
            if isinstance(row, dict)
            and not is_done(str(row.get("run_dir", "")))
            and not any(_same_path(str(row.get("run_dir", "")), d) for d in attempted)
        ]
        rows += [_failure_row(o) for o in outcomes if o.status == "failed"]
        columns = ["env", "agent", "rater", "seed", "run_dir", "error", "error_file"]
        with atomic_path(root / "failures.csv") as tmp:
            pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)
        write_atomic(root / "failures.json", json.dumps(rows, indent=2) + "\n")


def _record_invocation(root: Path, record: Mapping[str, Any]) -> None:
    """Append this invocation to ``sweep.json`` (under the sweep lock): earlier records are kept."""
    with exclusive_lock(root / SWEEP_LOCK):
        previous = _read_json(root / "sweep.json")
        if isinstance(previous, dict) and isinstance(previous.get("invocations"), list):
            invocations = previous["invocations"]
        elif isinstance(previous, dict) and "runs" in previous:
            invocations = [previous]  # the single record of a sweep from before invocations were kept
        else:
            invocations = []
        invocations.append(record)
        write_atomic(
            root / "sweep.json", json.dumps({"invocations": invocations}, indent=2, default=str) + "\n"
        )


def _settle_cells(cells: Sequence[RunCell], beside: bool) -> list[RunCell]:
    """Each cell with its settings hash, checked against a finished run in its directory.

    With ``beside`` a cell whose directory is finished with other settings moves next to it.

    :raises ConfigError: finished runs with other settings (one line: how many, an example, the keys)
    """
    resolved: dict[str, RunSettings] = {}
    settled: list[RunCell] = []
    conflicts: list[tuple[str, list[str]]] = []
    for cell in cells:
        # the cells of one (env, agent, rater) differ only in their seed: resolve once
        group = json.dumps({**cell.describe(), "seed": 0, "run_dir": ""}, sort_keys=True, default=str)
        if group not in resolved:
            resolved[group] = resolve_settings(
                cell.env_spec or cell.env,
                cell.agent,
                _cell_rater(cell),
                cell.seed,
                cell.steps,
                cell.queries,
                cell.overrides,
                cell.eval_freq,
                cell.n_eval_episodes,
            )
        settings = resolved[group].with_seed(cell.seed)
        cell = replace(cell, settings_hash=settings.digest)
        differing = compare_finished_run(cell.run_dir, settings)
        if differing and beside:
            cell = replace(cell, run_dir=str(beside_dir(cell.run_dir, settings.digest)))
            differing = compare_finished_run(cell.run_dir, settings)
        if differing:
            conflicts.append((cell.run_dir, differing))
        settled.append(cell)
    if conflicts:
        keys = sorted({k for _, ks in conflicts for k in ks})
        raise ConfigError(settings_conflict_message(conflicts[0][0], keys, len(conflicts)))
    return settled


def run_sweep(
    envs: str | Sequence[str],
    agents: str | Sequence[str],
    raters: str | Sequence[str] | None,
    seeds: int | Sequence[int],
    steps: int | None = None,
    queries: int | None = None,
    out: str | Path = "runs",
    jobs: int | None = None,
    backend: str = "local",
    address: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    agent_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    eval_freq: int | None = None,
    n_eval_episodes: int | None = None,
    progress: bool | None = None,
    grace_s: float = STOP_GRACE_S,
    beside: bool = False,
    device: str = "auto",
) -> SweepResult:
    """Run the grid env x agent x rater x seed; resumable, fault-tolerant, interruptible.

    :param envs: env specs (names, spec files, ``gym:`` ids or :class:`EnvSpec` objects; a list or a
        comma-separated string)
    :param agents: agent names
    :param raters: rater specs or :class:`Rater` objects (ignored for agents that need none); ``None`` if
        only such agents run
    :param seeds: a count ``n`` (seeds ``0..n-1``) or an explicit list
    :param steps: env-step budget per run (default: each agent config's)
    :param queries: query budget per run (default: each agent config's)
    :param out: sweep root; runs go to ``out/<env>/<agent>/<rater>/seed<k>``
    :param jobs: parallel runs (default: the number of cores; at most the number of runs to do)
    :param backend: ``"local"`` (process pool) or ``"ray"``
    :param address: Ray cluster address (``"auto"``, ``"ray://host:10001"``); ``None`` starts a local one
    :param overrides: agent config overrides for every run (nested dict)
    :param agent_overrides: per-agent overrides, ``{agent: {...}}``
    :param eval_freq: env steps between evaluations (overrides the configs)
    :param n_eval_episodes: episodes per evaluation (overrides the configs)
    :param progress: show a progress bar with ETA (default: when stderr is a terminal)
    :param grace_s: seconds stopped workers get to unwind before they are killed
    :param beside: cells whose directory holds a finished run with other settings run next to it
        (``seed<k>-<settings hash>``) instead of stopping the sweep
    :param device: torch device of every run (:func:`prefrl.agents.base.resolve_device`; with the local
        backend ``cuda`` is checked here, before anything runs)
    :returns: the :class:`SweepResult`; ``interrupted`` is set if SIGINT/SIGTERM stopped it
    :raises RayNotInstalledError: ``backend="ray"`` without Ray installed
    :raises ConfigError: finished runs in ``out`` have other settings than the grid (and not ``beside``);
        raised before anything runs or is written
    """
    if backend not in BACKENDS:
        raise SpecError(f"unknown backend '{backend}'; expected one of {', '.join(BACKENDS)}")
    if backend == "ray":
        import_ray()  # fail before any work, with the install command
    if jobs is not None and jobs < 1:
        raise SpecError(f"jobs must be >= 1, got {jobs}")
    root = Path(out)
    cells = expand_grid(
        envs,
        agents,
        raters,
        seeds,
        root,
        steps,
        queries,
        overrides,
        agent_overrides,
        eval_freq,
        n_eval_episodes,
    )
    cells = _settle_cells(cells, beside)
    if backend == "local":  # Ray workers may have GPUs the driver lacks: they check for themselves
        for agent in {c.agent for c in cells}:
            resolve_device(device, get_agent_class(agent))
    cells = [replace(c, device=device) for c in cells]
    root.mkdir(parents=True, exist_ok=True)
    _record_invocation(
        root,
        {
            "start_time": datetime.now(UTC).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "command": sys.argv,
            "envs": sorted({c.env for c in cells}),
            "agents": split_specs(agents),
            "raters": [r if isinstance(r, str) else repr(r) for r in split_specs(raters)],
            "seeds": _seed_list(seeds),
            "steps": steps,
            "queries": queries,
            "overrides": overrides,
            "agent_overrides": agent_overrides,
            "eval_freq": eval_freq,
            "n_eval_episodes": n_eval_episodes,
            "backend": backend,
            "device": device,
            "beside": beside,
            "runs": [c.describe() for c in cells],
        },
    )
    result = SweepResult(root=root, cells=cells)
    todo = [c for c in cells if not is_done(c.run_dir)]
    result.outcomes.extend(RunOutcome(c, "skipped") for c in cells if is_done(c.run_dir))
    workers = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))

    bar = tqdm(
        total=len(cells),
        initial=len(cells) - len(todo),
        desc="sweep",
        unit="run",
        dynamic_ncols=True,
        disable=(not sys.stderr.isatty()) if progress is None else not progress,
    )

    def on_outcome(outcome: RunOutcome) -> None:
        result.outcomes.append(outcome)
        if outcome.status == "failed":
            bar.write(f"FAILED {outcome.cell.label}: {outcome.error}")
            logger.error("run %s failed: %s", outcome.cell.label, outcome.error)
            _write_failures(root, result.outcomes)  # kept even if this process is killed later
        elif outcome.status == "locked":
            logger.info("run %s is running elsewhere: %s", outcome.cell.label, outcome.error)
        bar.set_postfix(failed=len(result.failed), refresh=False)
        bar.update(1)

    logger.info("sweep %s: %d runs, %d to do, %d workers (%s)", root, len(cells), len(todo), workers, backend)
    try:
        with _stop_signals():
            if todo and backend == "local":
                _run_local(todo, workers, on_outcome, grace_s)
            elif todo:
                _run_ray(todo, jobs or None, address, on_outcome)
    except KeyboardInterrupt:
        result.interrupted = True
        logger.warning("sweep interrupted; finished runs are kept, re-run to resume")
    finally:
        bar.close()
        _write_failures(root, result.outcomes)
    return result
