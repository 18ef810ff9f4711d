"""Learning-curve figures: offline agents (gradient steps) and online agents (env steps) on separate axes."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from prefrl import analysis, plots
from prefrl.report import make_figures


def write_run(root, agent, rater, seed, x_max, offline, final=-200.0):
    """A finished Pendulum run directory; offline runs count ``grad_steps`` at a constant ``env_steps``."""
    run_dir = root / "pendulum" / agent / rater / f"seed{seed}"
    run_dir.mkdir(parents=True)
    x = np.linspace(0, x_max, 6).astype(int)
    returns = np.linspace(-1200.0, final, len(x))
    frame = pd.DataFrame(
        {
            "env_steps": np.full(len(x), 60_000) if offline else x,
            "queries": np.full(len(x), 3600 if offline else 0) if offline or rater == "none" else x // 100,
            "wall_s": np.arange(len(x), dtype=float),
            "true_return_mean": returns,
            "true_return_std": 1.0,
            "normalised_score": 100 * (returns + 1222.6) / (1222.6 - 119.0),
        }
    )
    if offline:
        frame["grad_steps"] = x
        frame["labelled_pairs"] = 3600
    frame.to_csv(run_dir / "progress.csv", index=False)
    config = {
        "env": "pendulum",
        "agent": agent,
        "rater": rater,
        "seed": seed,
        "config": {"n_eval_episodes": 10},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "meta.json").write_text(json.dumps({"git_commit": "c0ffee"}))
    (run_dir / "done").write_text("x\n")
    return run_dir


ONLINE_STEPS, OFFLINE_STEPS = 100_000, 4_000


@pytest.fixture
def mixed_root(tmp_path):
    """ppo (no rater) and rm_ppo online over 100k env steps; cpl and bc offline over 4k gradient steps."""
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "ppo", "none", seed, ONLINE_STEPS, offline=False)
        write_run(root, "rm_ppo", "partial_return", seed, ONLINE_STEPS, offline=False)
        write_run(root, "cpl", "regret", seed, OFFLINE_STEPS, offline=True)
        write_run(root, "bc", "regret", seed, OFFLINE_STEPS, offline=True)
    return root


def _legend(ax) -> str:
    return " ".join(text.get_text() for text in ax.get_legend().get_texts())


def test_offline_and_online_curves_get_their_own_axes_and_x_ranges(mixed_root):
    table = analysis.load_runs(mixed_root, only_done=True)
    fig = plots.learning_curve_figure(table, x="env_steps", y="auto", reps=50)
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(axes) == {"pendulum - rater: partial_return", "pendulum - rater: regret (offline)"}
    online, offline = axes["pendulum - rater: partial_return"], axes["pendulum - rater: regret (offline)"]

    assert "rm_ppo" in _legend(online) and "ppo (no rater)" in _legend(online)
    assert "cpl" not in _legend(online) and "bc" not in _legend(online)
    assert "cpl" in _legend(offline) and "bc" in _legend(offline) and "ppo" not in _legend(offline)

    assert online.get_xlabel() == "environment steps"
    assert offline.get_xlabel().startswith("gradient steps")
    online_x = np.concatenate([line.get_xdata() for line in online.get_lines()])
    offline_x = np.concatenate([line.get_xdata() for line in offline.get_lines()])
    # each panel spans its own runs: neither range is stretched to the other's (the dataset's 60k steps)
    assert online_x.max() == pytest.approx(ONLINE_STEPS) and offline_x.max() == pytest.approx(OFFLINE_STEPS)
    assert online.get_xlim()[1] < 1.2 * ONLINE_STEPS and offline.get_xlim()[1] < 1.2 * OFFLINE_STEPS
    # the offline curves are drawn along the whole gradient-step range, not as a single point
    assert all(len(line.get_xdata()) > 10 for line in offline.get_lines())
    plt.close(fig)


def test_offline_runs_are_left_out_of_the_query_axis(mixed_root):
    table = analysis.load_runs(mixed_root, only_done=True)
    panels = plots.curve_panels(table[table["rater"] != "none"], x="queries")
    assert [(p.env, p.rater, p.offline) for p in panels] == [("pendulum", "partial_return", False)]
    offline_only = table[table["agent"].isin(["cpl", "bc"])]
    with pytest.raises(ValueError, match="no evaluations"):
        plots.plot_learning_curves(offline_only, "unused.png", x="queries", y="auto", reps=20)


def test_figures_of_an_offline_only_sweep(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "cpl", "regret", seed, OFFLINE_STEPS, offline=True)
    figures = make_figures(root, out=tmp_path / "figs", reps=20)
    assert "learning_curves_steps" in figures and "learning_curves_queries" not in figures
    svg = (tmp_path / "figs" / "learning_curves_steps.svg").read_text()
    assert "gradient steps" in svg


def test_is_offline_reads_the_grad_steps_column(mixed_root):
    table = analysis.load_runs(mixed_root)
    offline = analysis.is_offline(table)
    assert set(table.loc[offline, "agent"]) == {"cpl", "bc"}
    assert set(table.loc[~offline, "agent"]) == {"ppo", "rm_ppo"}
    assert not analysis.is_offline(table.drop(columns="grad_steps")).any()
