"""Sweeps: grid expansion, failures, resume, determinism, clean stop on SIGINT/SIGTERM, Ray backend."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import yaml

from prefrl import sweep
from prefrl.cli import results as cli_results
from prefrl.cli import run as cli_run
from prefrl.errors import ConfigError, RaterError, SpecError
from prefrl.experiment import run_experiment
from prefrl.run_dir import default_run_dir

TINY = {"n_envs": 2, "policy_kwargs": {"net_arch": [16]}, "ppo": {"n_steps": 64, "n_epochs": 1}}
# spo needs n_steps to be a multiple of its trajectory length (50): this config fails when the agent is built
BROKEN_SPO = {"spo": TINY}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ppo,spo", ["ppo", "spo"]),
        (["ppo", "spo,ppo"], ["ppo", "spo"]),
        ("partial_return,mistake:eps=0.2,regret", ["partial_return", "mistake:eps=0.2", "regret"]),
        ("stoc:beta=1,eps=2+skip:eps=0.1,equal", ["stoc:beta=1,eps=2+skip:eps=0.1", "equal"]),
        (None, []),
    ],
)
def test_split_specs(text, expected):
    assert sweep.split_specs(text) == expected


def test_expand_grid(tmp_path):
    cells = sweep.expand_grid(
        ["pendulum"], ["ppo", "spo"], ["partial_return", "mistake:eps=0.2"], 2, tmp_path
    )
    labels = [c.label for c in cells]
    # ppo needs no rater: once per seed with rater "none", not once per rater
    assert labels == [
        "pendulum/ppo/none/seed0", "pendulum/ppo/none/seed1",
        "pendulum/spo/partial_return/seed0", "pendulum/spo/partial_return/seed1",
        "pendulum/spo/mistake:eps=0.2/seed0", "pendulum/spo/mistake:eps=0.2/seed1",
    ]  # fmt: skip
    assert cells[0].run_dir == str(tmp_path / "pendulum" / "ppo" / "none" / "seed0")
    assert cells[-1].run_dir == str(tmp_path / "pendulum" / "spo" / "mistake_eps=0.2" / "seed1")
    assert [c.seed for c in sweep.expand_grid("pendulum", "ppo", None, [3, 7], tmp_path)] == [3, 7]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"raters": "partial_retrun"}, RaterError, "partial_return"),  # typo, with a hint
        ({"raters": None}, SpecError, "give at least one --rater"),
        ({"seeds": 0}, SpecError, "seeds"),
        ({"envs": "nope"}, SpecError, "nope"),
        ({"overrides": {"ppo": {"learning_rte": 1e-3}}}, SpecError, "learning_rate"),
    ],
)
def test_grid_is_validated_before_anything_runs(tmp_path, kwargs, error, match):
    args = {"envs": "pendulum", "agents": "ppo,spo", "raters": "partial_return", "seeds": 1}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sweep.run_sweep(**args, out=tmp_path / "out", steps=64)
    assert not (tmp_path / "out").exists()


def test_failures_are_recorded_and_the_sweep_resumes(tmp_path):
    options = {"steps": 128, "out": tmp_path, "jobs": 2, "eval_freq": 128, "n_eval_episodes": 1}
    options.update(overrides=TINY, progress=False)
    result = sweep.run_sweep("pendulum", "ppo,spo", "partial_return", 1, **options)
    assert [o.cell.label for o in result.completed] == ["pendulum/ppo/none/seed0"]
    assert [o.cell.label for o in result.failed] == ["pendulum/spo/partial_return/seed0"]
    assert not result.ok and not result.interrupted
    assert "multiple of the trajectory length" in result.failed[0].error
    failures = pd.read_csv(tmp_path / "failures.csv")
    assert failures[["agent", "rater", "seed"]].values.tolist() == [["spo", "partial_return", 0]]
    assert (tmp_path / "pendulum/spo/partial_return/seed0/error.txt").is_file()
    assert json.loads((tmp_path / "failures.json").read_text())[0]["agent"] == "spo"
    (invocation,) = json.loads((tmp_path / "sweep.json").read_text())["invocations"]
    assert len(invocation["runs"]) == 2 and invocation["steps"] == 128

    # resume: the finished run is skipped (same settings), the failed one retried (fixed by a valid config)
    fixed = {"spo": {**TINY, "ppo": {"n_steps": 100, "n_epochs": 1}, "spo": {"num_opponents": 2}}}
    options.update(overrides=None, agent_overrides={"ppo": TINY, **fixed})
    before = (tmp_path / "pendulum/ppo/none/seed0/done").stat().st_mtime_ns
    again = sweep.run_sweep("pendulum", "ppo,spo", "partial_return", 1, **options)
    assert [o.cell.label for o in again.skipped] == ["pendulum/ppo/none/seed0"]
    assert [o.cell.label for o in again.completed] == ["pendulum/spo/partial_return/seed0"]
    assert again.ok and (tmp_path / "pendulum/ppo/none/seed0/done").stat().st_mtime_ns == before
    assert pd.read_csv(tmp_path / "failures.csv").empty
    # every invocation is kept, each with the settings hashes of its runs
    invocations = json.loads((tmp_path / "sweep.json").read_text())["invocations"]
    assert len(invocations) == 2 and invocations[0]["runs"][0] == invocations[1]["runs"][0]  # the ppo run
    config = yaml.safe_load((tmp_path / "pendulum/spo/partial_return/seed0/config.yaml").read_text())
    assert invocations[1]["runs"][1]["settings_hash"] == config["settings_hash"]


def _finished_runs(root, seeds, steps):
    """Finished tiny ppo runs where a sweep of ``pendulum/ppo`` puts them (trained in this process)."""
    options = {"overrides": TINY, "eval_freq": 128, "n_eval_episodes": 1, "progress_bar": False}
    return [
        run_experiment(
            "pendulum",
            "ppo",
            None,
            s,
            steps=steps,
            out=default_run_dir("pendulum", "ppo", None, s, root),
            **options,
        )
        for s in seeds
    ]


def test_sweep_with_changed_settings_stops_before_anything_runs(tmp_path):
    runs = _finished_runs(tmp_path, [0, 1], steps=128)
    done = [(run / "done").stat().st_mtime_ns for run in runs]
    options = {"out": tmp_path, "overrides": TINY, "eval_freq": 128, "n_eval_episodes": 1, "progress": False}
    with pytest.raises(ConfigError) as info:
        sweep.run_sweep("pendulum", "ppo", None, 3, steps=256, **options)
    message = str(info.value)
    assert message.startswith(f"2 run directories (e.g. {runs[0]}) hold finished runs with other settings")
    assert "(differing: config.total_steps, steps)" in message and "\n" not in message
    assert not (tmp_path / "sweep.json").exists() and not (tmp_path / "pendulum/ppo/none/seed2").exists()
    assert [(run / "done").stat().st_mtime_ns for run in runs] == done

    # beside: each run goes next to the finished one; those beside already exist, so nothing trains here
    beside = [run_experiment("pendulum", "ppo", None, s, steps=256, out=runs[s], beside=True,
                             overrides=TINY, eval_freq=128, n_eval_episodes=1) for s in (0, 1)]  # fmt: skip
    assert all(b.name.startswith(f"seed{s}-") for s, b in enumerate(beside))
    result = sweep.run_sweep("pendulum", "ppo", None, [0, 1], steps=256, beside=True, **options)
    assert [o.status for o in result.outcomes] == ["skipped", "skipped"]
    assert [c.run_dir for c in result.cells] == [str(b) for b in beside] and result.ok


def test_same_seed_same_curve(tmp_path):
    def curve(name, seed):
        run = run_experiment("pendulum", "ppo", None, seed, steps=256, out=tmp_path / name, overrides=TINY,
                             eval_freq=128, n_eval_episodes=2, progress_bar=False)  # fmt: skip
        return pd.read_csv(run / "progress.csv")[["env_steps", "true_return_mean"]]

    a, b, c = curve("a", 0), curve("b", 0), curve("c", 1)
    pd.testing.assert_frame_equal(a, b)
    assert not a["true_return_mean"].equals(c["true_return_mean"])


# --------------------------------------------------------------------------------------------------
# Interruption
# --------------------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import sys
    from prefrl.sweep import run_sweep

    TINY = {tiny!r}

    if __name__ == "__main__":
        result = run_sweep("pendulum", "ppo", None, 3, steps=int(sys.argv[2]), out=sys.argv[1], jobs=2,
                           overrides=TINY, eval_freq=256, n_eval_episodes=1, progress=False, grace_s=20)
        print(result.summary(), flush=True)
        sys.exit(130 if result.interrupted else 0 if result.ok else 1)
    """
)


def _check_run_dirs(root, steps):
    """No ``done`` without a complete run; every progress.csv parses."""
    done = 0
    for config in root.rglob("config.yaml"):
        run_dir = config.parent
        if (run_dir / "progress.csv").is_file():
            table = pd.read_csv(run_dir / "progress.csv")
            assert table["true_return_mean"].notna().all() and table["env_steps"].is_monotonic_increasing
        if (run_dir / "done").is_file():
            done += 1
            meta = json.loads((run_dir / "meta.json").read_text())
            assert "end_time" in meta and (run_dir / "policy.zip").is_file()
            assert pd.read_csv(run_dir / "progress.csv")["env_steps"].iloc[-1] == steps
            assert yaml.safe_load(config.read_text())["steps"] == steps
        assert not list(run_dir.glob("*.tmp"))
    return done


def _group_gone(pgid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow  # ~14-16 s each: a sweep subprocess, interrupted, then resumed to the end
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_sweep_stops_cleanly_and_resumes(tmp_path, sig):
    # long enough that the grid cannot finish between the first progress row and the signal
    steps = 6144
    script = tmp_path / "sweep_script.py"
    script.write_text(SCRIPT.format(tiny=TINY))
    root = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), str(root), str(steps)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    # a shell's background job (CI, `make test &`) starts with SIGINT ignored, which a child inherits;
    # restore the default so the sweep sees Ctrl-C as it would in a terminal
    proc = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **pipes,
    )
    try:
        # wait until a run is under way (a progress row past step 0), then interrupt
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = [len(pd.read_csv(p)) for p in root.rglob("progress.csv") if p.stat().st_size > 0]
            if any(n >= 2 for n in rows):
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C in a terminal reaches the whole process group
        else:
            os.kill(proc.pid, sig)  # a scheduler's SIGTERM reaches the sweep process only
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert _group_gone(proc.pid), "worker processes outlived the sweep"
    assert _check_run_dirs(root, steps) < 3  # stopped before the grid finished

    result = sweep.run_sweep("pendulum", "ppo", None, 3, steps=steps, out=root, jobs=2, overrides=TINY,
                             eval_freq=256, n_eval_episodes=1, progress=False)  # fmt: skip
    assert result.ok and len(result.completed) + len(result.skipped) == 3
    assert _check_run_dirs(root, steps) == 3


# --------------------------------------------------------------------------------------------------
# Backends and command line
# --------------------------------------------------------------------------------------------------


def test_ray_missing_gives_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(sweep.RayNotInstalledError, match=r"pip install 'prefrl\[ray\]'"):
        sweep.run_sweep("pendulum", "ppo", None, 1, out=tmp_path, backend="ray")
    with pytest.raises(SpecError, match="backend"):
        sweep.run_sweep("pendulum", "ppo", None, 1, out=tmp_path, backend="dask")


@pytest.mark.slow  # ~13 s: starts a Ray cluster
def test_ray_backend_matches_local(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'prefrl[ray]')")
    options = {
        "steps": 256,
        "jobs": 2,
        "overrides": TINY,
        "eval_freq": 128,
        "n_eval_episodes": 2,
        "progress": False,
    }
    local = sweep.run_sweep("pendulum", "ppo", None, 2, out=tmp_path / "local", **options)
    remote = sweep.run_sweep("pendulum", "ppo", None, 2, out=tmp_path / "ray", backend="ray", **options)
    assert local.ok and remote.ok and len(remote.completed) == 2
    for seed in (0, 1):
        columns = ["env_steps", "queries", "true_return_mean", "true_return_std"]
        a = pd.read_csv(tmp_path / f"local/pendulum/ppo/none/seed{seed}/progress.csv")[columns]
        b = pd.read_csv(tmp_path / f"ray/pendulum/ppo/none/seed{seed}/progress.csv")[columns]
        pd.testing.assert_frame_equal(a, b)


def test_cli_parsers(tmp_path):
    parser = argparse.ArgumentParser(prog="prefrl")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_run.add_parser(sub)
    cli_results.add_parser(sub)
    args = parser.parse_args(
        ["sweep", "--env", "pendulum", "--agent", "ppo,spo", "--rater", "partial_return,mistake:eps=0.2",
         "--rater", "regret", "--seeds", "5", "--steps", "1000", "--jobs", "2", "--backend", "ray"]
    )  # fmt: skip
    assert args.func is cli_run.cmd_sweep and args.backend == "ray" and args.jobs == 2 and not args.beside
    assert parser.parse_args(["sweep", "--env", "pendulum", "--agent", "ppo", "--beside"]).beside
    assert parser.parse_args(["run", "--agent", "ppo", "--beside"]).beside
    assert sweep.split_specs(args.rater) == ["partial_return", "mistake:eps=0.2", "regret"]
    assert cli_run._parse_seeds(args.seeds) == 5 and cli_run._parse_seeds("0,3") == [0, 3]
    args = parser.parse_args(["report", str(tmp_path), "--format", "html"])
    assert args.func is cli_results.cmd_report and args.fmt == "html"
    assert parser.parse_args(["plot", str(tmp_path)]).func is cli_results.cmd_plot
