"""``prefrl run`` ends with the final score of the run (read by :func:`prefrl.analysis.final_evaluation`)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from prefrl import cli
from prefrl.analysis import final_evaluation
from prefrl.cli import run as run_cli
from prefrl.errors import RunDirError


def fake_run_dir(tmp_path, env="pendulum", rows=None, grad_steps=None, episodes=10):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = rows or [(0, 0, -1200.0, 50.0, -1.0), (5000, 100, -152.3, 9.8, 96.1)]
    frame = pd.DataFrame(
        rows, columns=["env_steps", "queries", "true_return_mean", "true_return_std", "normalised_score"]
    )
    if grad_steps is not None:
        frame["grad_steps"] = grad_steps
    frame.to_csv(run_dir / "progress.csv", index=False)
    config = {"env": env, "agent": "ppo", "rater": "none", "seed": 0}
    if episodes is not None:
        config["config"] = {"n_eval_episodes": episodes}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def test_final_evaluation_is_the_last_row(tmp_path):
    final = final_evaluation(fake_run_dir(tmp_path))
    assert (final.true_return, final.true_return_std, final.normalised_score) == (-152.3, 9.8, 96.1)
    assert (final.steps, final.step_unit, final.queries, final.episodes) == (5000, "env steps", 100, 10)
    assert final.has_normalised_score


def test_an_offline_run_counts_gradient_steps(tmp_path):
    rows = [(60_000, 3600, -1200.0, 1.0, -1.0), (60_000, 3600, -300.0, 1.0, 80.0)]
    final = final_evaluation(fake_run_dir(tmp_path, rows=rows, grad_steps=[0, 4000]))
    assert (final.steps, final.step_unit, final.queries) == (4000, "gradient steps", 3600)


def test_no_anchors_give_nan_not_an_error(tmp_path):
    rows = [(0, 0, -5.0, 1.0, math.nan), (1000, 0, -2.0, 1.0, math.nan)]
    final = final_evaluation(fake_run_dir(tmp_path, env="not_a_spec_with_anchors", rows=rows, episodes=None))
    assert math.isnan(final.normalised_score) and not final.has_normalised_score
    assert final.true_return == -2.0 and final.episodes is None
    line = run_cli.format_final(final)
    assert "normalised score n/a" in line and "return -2.0" in line and "episodes" not in line


def test_a_run_without_evaluations_is_a_run_dir_error(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    (run_dir / "progress.csv").write_text("env_steps,queries,true_return_mean\n")
    with pytest.raises(RunDirError, match="no evaluation"):
        final_evaluation(run_dir)


def test_run_prints_the_final_score_then_the_run_directory(tmp_path, monkeypatch, capsys):
    run_dir = fake_run_dir(tmp_path)
    monkeypatch.setattr(run_cli, "run_experiment", lambda **kwargs: run_dir)
    assert cli.main(["run", "--agent", "ppo"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == (
        "final: return -152.3 +- 9.8, normalised score 96.1 (deterministic policy, 10 episodes; "
        "5,000 env steps, 100 queries)"
    )
    assert lines[-1] == f"run directory: {run_dir}"


def test_a_real_run_reports_what_its_progress_csv_holds(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--agent", "ppo", "--steps", "128", "--out", str(out), "--eval-freq", "128",
            "--eval-episodes", "1", "--set", "ppo.n_steps=64", "--set", "n_envs=2",
            "--set", "policy_kwargs.net_arch=[8]"]  # fmt: skip
    assert cli.main(argv) == 0
    last = pd.read_csv(out / "progress.csv").iloc[-1]
    text = capsys.readouterr().out
    assert f"final: return {last['true_return_mean']:.1f}" in text
    assert f"normalised score {last['normalised_score']:.1f} (deterministic policy, 1 episode;" in text
