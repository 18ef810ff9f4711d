"""Locked run directories: exclusive locks, stale locks, concurrent sweeps, orphaned workers."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import prefrl.run_dir
from prefrl import sweep
from prefrl.errors import RunDirError
from prefrl.experiment import run_experiment
from prefrl.run_dir import RunDirLockedError, RunLock, is_done, lock_path, prepare_run_dir

TINY = {"n_envs": 2, "policy_kwargs": {"net_arch": [16]}, "ppo": {"n_steps": 64, "n_epochs": 1}}

# holds the flock of a lock file the way a run does, then waits to be killed
HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": os.getpid(), "hostname": socket.gethostname()}).encode())
    print("locked", flush=True)
    time.sleep(600)
    """
)


def _unfinished_attempt(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("env: pendulum\nagent: ppo\n")
    (run_dir / "progress.csv").write_text("env_steps,true_return_mean\n0,-1000.0\n")


def test_lock_is_exclusive_and_removed_on_release(tmp_path):
    run_dir = tmp_path / "runs" / "seed0"
    with RunLock(run_dir) as lock:
        assert lock.held and lock.path == tmp_path / "runs" / ".seed0.lock"
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid() and record["start_time"]
        # a second holder in this very process is refused too: flock belongs to the open file
        with pytest.raises(RunDirLockedError, match=f"in use by pid {os.getpid()} on"):
            RunLock(run_dir).acquire()
    assert not lock.held and not lock_path(run_dir).exists()
    with RunLock(run_dir):  # free again
        pass


@pytest.mark.parametrize("pid", [2**22 + 12345, "not a pid"])
def test_stale_lock_record_is_taken_over(tmp_path, caplog, pid):
    # what a crashed run leaves: the file with its record, and no process holding it
    run_dir = tmp_path / "seed0"
    lock_path(run_dir).write_text(json.dumps({"pid": pid, "hostname": "somewhere"}))
    with caplog.at_level(logging.WARNING, logger="prefrl.run_dir"), RunLock(run_dir) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"taking over a stale lock of pid {pid} on somewhere" in caplog.text


def test_without_flock_the_recorded_pid_decides(tmp_path, monkeypatch):
    # filesystems without flock: a holder recorded on this host counts while its pid lives
    monkeypatch.setattr(prefrl.run_dir, "fcntl", None)
    run_dir = tmp_path / "seed0"
    host = socket.gethostname()
    lock_path(run_dir).write_text(json.dumps({"pid": os.getpid(), "hostname": host}))
    with pytest.raises(RunDirLockedError, match=f"pid {os.getpid()} on {host}"):
        RunLock(run_dir).acquire()
    lock_path(run_dir).write_text(json.dumps({"pid": 2**22 + 12345, "hostname": host}))
    with RunLock(run_dir) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock_path(run_dir).exists()


def test_lock_of_a_killed_holder_is_taken_over(tmp_path, caplog):
    run_dir = tmp_path / "seed0"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path(run_dir))], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RunDirLockedError, match=f"pid {holder.pid} on"):
            RunLock(run_dir).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: its record is stale
    with caplog.at_level(logging.WARNING, logger="prefrl.run_dir"), RunLock(run_dir):
        pass
    assert f"stale lock of pid {holder.pid}" in caplog.text


def test_live_lock_makes_run_experiment_refuse(tmp_path):
    run_dir = tmp_path / "run"
    _unfinished_attempt(run_dir)  # another process's run in progress, as far as files tell
    with RunLock(run_dir):
        with pytest.raises(RunDirError) as info:
            run_experiment("pendulum", "ppo", None, 0, steps=128, out=run_dir, overrides=TINY)
        assert isinstance(info.value, RunDirLockedError) and "\n" not in str(info.value)
        assert f"pid {os.getpid()}" in str(info.value)
        # neither cleared nor touched
        assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "progress.csv"]
        # clearing without the lock is refused as well
        with pytest.raises(RunDirLockedError):
            prepare_run_dir(run_dir)
        assert (run_dir / "progress.csv").is_file()
    prepare_run_dir(run_dir)  # lock free: the unfinished attempt is cleared
    assert run_dir.is_dir() and not any(run_dir.iterdir())


def test_prepare_run_dir_refuses_a_finished_run(tmp_path):
    run_dir = tmp_path / "run"
    _unfinished_attempt(run_dir)
    (run_dir / "done").write_text("x\n")
    with pytest.raises(RunDirError, match="holds a finished run"):
        prepare_run_dir(run_dir)
    assert is_done(run_dir)


def test_sweep_leaves_a_locked_cell_to_its_holder(tmp_path):
    (cell,) = sweep.expand_grid("pendulum", "ppo", None, 1, tmp_path, steps=128, overrides=TINY)
    _unfinished_attempt(Path(cell.run_dir))
    with RunLock(cell.run_dir):
        outcome = sweep.run_cell(cell)
    assert outcome.status == "locked" and "in use by pid" in outcome.error
    assert not (Path(cell.run_dir) / "error.txt").exists()  # nothing written into the holder's run
    result = sweep.SweepResult(root=tmp_path, cells=[cell], outcomes=[outcome])
    assert result.locked == [outcome] and not result.failed and not result.ok
    assert "1 running elsewhere" in result.summary()


def _outcome(tmp_path, seed, status, error=None):
    cell = sweep.RunCell("pendulum", "spo", "partial_return", seed, str(tmp_path / f"seed{seed}"))
    return sweep.RunOutcome(cell, status, error=error)


def test_failures_of_concurrent_sweeps_are_merged(tmp_path):
    # sweep A: seed0 failed, seed1 running in sweep B; sweep B: seed1 failed
    sweep._write_failures(tmp_path, [_outcome(tmp_path, 0, "failed", "A"), _outcome(tmp_path, 1, "locked")])
    sweep._write_failures(tmp_path, [_outcome(tmp_path, 1, "failed", "B"), _outcome(tmp_path, 0, "locked")])
    table = pd.read_csv(tmp_path / "failures.csv")
    assert sorted(zip(table["seed"], table["error"], strict=True)) == [(0, "A"), (1, "B")]
    # a later sweep retries seed0 (and fails anew) and finds seed1 finished by someone else
    (tmp_path / "seed1").mkdir()
    (tmp_path / "seed1" / "done").write_text("x\n")
    sweep._write_failures(tmp_path, [_outcome(tmp_path, 0, "failed", "C")])
    rows = json.loads((tmp_path / "failures.json").read_text())
    assert [(r["seed"], r["error"]) for r in rows] == [(0, "C")]
    assert pd.read_csv(tmp_path / "failures.csv")["error"].tolist() == ["C"]


# --------------------------------------------------------------------------------------------------
# Two sweeps at once, and a sweep killed with SIGKILL (subprocesses)
# --------------------------------------------------------------------------------------------------

CONCURRENT = textwrap.dedent(
    """
    import json, sys
    from prefrl.sweep import run_sweep

    TINY = {tiny!r}

    if __name__ == "__main__":
        # spo fails with this config (n_steps not a multiple of its trajectory length): failures to merge
        result = run_sweep("pendulum", "ppo,spo", "partial_return", 3, steps=1024, out=sys.argv[1], jobs=2,
                           agent_overrides={{"ppo": TINY, "spo": TINY}}, eval_freq=256, n_eval_episodes=1,
                           progress=False)
        print(json.dumps({{o.cell.label: o.status for o in result.outcomes}}), flush=True)
    """
)


def _start(script: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow  # ~30-60 s on 2 cores: two sweeps of 6 runs, 2 workers each
def test_two_sweeps_at_once_split_the_grid(tmp_path):
    script = tmp_path / "two_sweeps.py"
    script.write_text(CONCURRENT.format(tiny=TINY))
    root = tmp_path / "runs"
    first = _start(script, str(root))
    time.sleep(0.5)
    second = _start(script, str(root))
    outputs = []
    for proc in (first, second):
        try:
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode in (0, 1), err  # 1: the spo runs failed in that sweep
        assert out.strip(), err
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    ppo = {f"pendulum/ppo/none/seed{k}" for k in range(3)}
    spo = {f"pendulum/spo/partial_return/seed{k}" for k in range(3)}
    for statuses in outputs:
        assert set(statuses) == ppo | spo  # every cell has an outcome in both sweeps
        assert {statuses[label] for label in ppo} <= {"done", "skipped", "locked"}
        assert {statuses[label] for label in spo} <= {"failed", "skipped", "locked"}
    # every ppo run trained exactly once, by one of the two sweeps
    trained = [{label for label, status in statuses.items() if status == "done"} for statuses in outputs]
    assert trained[0] | trained[1] == ppo and not trained[0] & trained[1]

    for seed in range(3):
        run_dir = root / "pendulum/ppo/none" / f"seed{seed}"
        assert is_done(run_dir)
        steps = pd.read_csv(run_dir / "progress.csv")["env_steps"].tolist()
        assert steps == [0, 256, 512, 768, 1024]  # one set of rows, no duplicates
        # events.out.tfevents.<time>.<host>.<pid>.<n>: one training process wrote them all
        events = list((run_dir / "tb").rglob("events.out.tfevents.*"))
        assert events and len({path.name.split(".")[-2] for path in events}) == 1
        assert json.loads((run_dir / "meta.json").read_text())["end_time"]
    failures = pd.read_csv(root / "failures.csv")
    assert sorted(failures["run_dir"]) == sorted(
        str(root / "pendulum/spo/partial_return" / f"seed{k}") for k in range(3)
    )
    assert failures["error"].str.contains("multiple of the trajectory length").all()
    assert len(json.loads((root / "sweep.json").read_text())["invocations"]) == 2
    assert not list(root.rglob(".seed*.lock"))  # every lock released and removed


SIGKILLED = textwrap.dedent(
    """
    import sys
    from prefrl.sweep import run_sweep

    if __name__ == "__main__":
        run_sweep("pendulum", "ppo", None, 3, steps=50000, out=sys.argv[1], jobs=2, overrides={tiny!r},
                  eval_freq=256, n_eval_episodes=1, progress=False)
    """
)


def _live_pids_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (an orphaned zombie waits for a reaper)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow  # ~15-25 s: a sweep subprocess starts its workers, then is killed
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_sigkilled_sweep_leaves_no_worker(tmp_path):
    script = tmp_path / "killed_sweep.py"
    script.write_text(SIGKILLED.format(tiny=TINY))
    root = tmp_path / "runs"
    proc = _start(script, str(root))
    try:
        deadline = time.monotonic() + 180
        while not any(p.stat().st_size > 0 for p in root.rglob("progress.csv")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        workers = {json.loads(p.read_text())["pid"] for p in root.rglob(".seed*.lock") if p.stat().st_size}
        assert workers and proc.pid not in workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        while _live_pids_in_group(proc.pid) and time.monotonic() - killed_at < 8:
            time.sleep(0.2)
        assert _live_pids_in_group(proc.pid) == [], "workers outlived the killed sweep"
    finally:
        for pid in _live_pids_in_group(proc.pid):
            os.kill(pid, signal.SIGKILL)
    run_dirs = [p.parent for p in root.rglob("config.yaml")]
    assert run_dirs and not any(is_done(d) for d in run_dirs)
    # the unfinished runs' locks died with their workers: a new run takes the directory over
    run_experiment("pendulum", "ppo", None, 0, steps=128, out=run_dirs[0], overrides=TINY, eval_freq=128,
                   n_eval_episodes=1, progress_bar=False)  # fmt: skip
    assert is_done(run_dirs[0])
