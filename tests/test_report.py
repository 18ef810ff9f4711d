"""Figures and the self-contained report of a set of runs."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from prefrl import analysis, plots
from prefrl.report import make_figures, provenance, run_status, write_report


def fake_run(root, env, agent, rater, seed, final, queries=0, done=True, error=None):
    """A run directory whose true return rises linearly to ``final`` (pendulum has normalisation)."""
    run_dir = root / env / agent / rater / f"seed{seed}"
    run_dir.mkdir(parents=True)
    steps = np.arange(0, 1001, 250)
    returns = np.linspace(final - 400.0, final, len(steps))
    frame = pd.DataFrame(
        {
            "env_steps": steps,
            "queries": (steps / 1000 * queries).astype(int),
            "wall_s": steps / 100.0,
            "true_return_mean": returns,
            "true_return_std": 1.0,
            "normalised_score": 100 * (returns + 1222.6) / (1222.6 - 119.0),
        }
    )
    frame.to_csv(run_dir / "progress.csv", index=False)
    config = {"env": env, "agent": agent, "rater": rater, "seed": seed, "steps": 1000, "queries": queries}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    meta = {"git_commit": "c0ffee", "git_dirty": False, "packages": {"numpy": "2.4"}, "python": "3.11",
            "hostname": "box"}  # fmt: skip
    (run_dir / "meta.json").write_text(json.dumps(meta))
    if done:
        (run_dir / "done").write_text("x\n")
    if error:
        (run_dir / "error.txt").write_text(f"Traceback (most recent call last):\n  ...\n{error}\n")
    return run_dir


@pytest.fixture
def sweep_root(tmp_path):
    root = tmp_path / "sweep"
    for seed in range(3):
        fake_run(root, "pendulum", "ppo", "none", seed, -150.0 - seed)
        fake_run(root, "pendulum", "spo", "partial_return", seed, -300.0 - 20 * seed, queries=500)
        fake_run(root, "pendulum", "rm_ppo", "partial_return", seed, -600.0 - 20 * seed, queries=500)
    fake_run(root, "pendulum", "rm_ppo", "partial_return", 3, -900.0, done=False, error="ValueError: boom")
    return root


def test_make_figures_writes_png_and_svg(sweep_root, tmp_path):
    figures = make_figures(sweep_root, out=tmp_path / "figs", reps=100)
    assert {
        "learning_curves_steps",
        "learning_curves_queries",
        "aggregate_pendulum",
        "improvement_pendulum",
    } <= set(figures)
    for paths in figures.values():
        assert sorted(p.suffix for p in paths) == [".png", ".svg"]
        for path in paths:
            assert path.stat().st_size > 1000
    svg = (tmp_path / "figs" / "learning_curves_steps.svg").read_text()
    assert "environment steps" in svg and "normalised score" in svg  # labelled axes with units


def test_query_curves_leave_out_reference_agents(sweep_root):
    table = analysis.load_runs(sweep_root, only_done=True)
    panels = plots._panels(table, "queries")
    assert [(env, rater) for env, rater, _ in panels] == [("pendulum", "partial_return")]
    assert "ppo" not in set(panels[0][2]["agent"])
    steps_panels = plots._panels(table, "env_steps")
    assert "ppo" in set(steps_panels[0][2]["agent"])  # drawn as the reference vs env steps


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_write_report(sweep_root, fmt):
    path = write_report(sweep_root, fmt=fmt, reps=100, rater_pairs=200)
    assert path == sweep_root / f"report.{fmt}"
    text = path.read_text()
    for needle in ("Final scores", "Learning curves", "Probability of improvement", "Rater diagnostics",
                   "Failed and unfinished", "ValueError: boom", "c0ffee", "numpy 2.4"):  # fmt: skip
        assert needle in text, needle
    # the summary row of ppo: mean of the three final normalised scores
    finals = 100 * (np.array([-150.0, -151.0, -152.0]) + 1222.6) / (1222.6 - 119.0)
    assert f"{finals.mean():.1f}" in text
    if fmt == "md":
        images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
        assert len(images) >= 5
        assert all((path.parent / image).is_file() for image in images)
    else:
        assert text.count('src="data:image/png;base64,') >= 5
        assert not re.search(r'src="(?!data:)', text)  # self-contained: no external image


def test_report_errors(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="format"):
        write_report(tmp_path, fmt="pdf")


def test_run_status_and_provenance(sweep_root):
    status = run_status(sweep_root)
    assert status["status"].value_counts().to_dict() == {"done": 9, "failed": 1}
    assert status.loc[status["status"] == "failed", "error"].iloc[0] == "ValueError: boom"
    prov = provenance(sweep_root)
    assert prov["runs"] == 10 and prov["git_commits"] == {"c0ffee": 10}
    assert prov["packages"]["numpy"] == {"2.4": 10}


def test_rater_diagnostics_plot(tmp_path):
    report = {
        "env": "pendulum", "policy": "random", "num_pairs": 100, "segment_length": 50,
        "raters": [
            {"rater": "partial_return", "queries": 100, "tie_share": 0.0, "skip_share": 0.0, "agreement": 1.0,
             "cycle_rate": 0.0, "pairs_per_s": 1e6},
            {"rater": "skip", "queries": 80, "tie_share": 0.1, "skip_share": 0.2, "agreement": None,
             "cycle_rate": 0.01, "pairs_per_s": 1e6},
        ],
    }  # fmt: skip
    matrix = pd.DataFrame(
        [[1.0, 0.8], [0.8, 1.0]], index=["partial_return", "skip"], columns=["partial_return", "skip"]
    )
    paths = plots.plot_rater_diagnostics(report, tmp_path / "raters", agreement=matrix)
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)
    assert "agreement between raters" in paths[1].read_text()
