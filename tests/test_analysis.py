"""Aggregates over runs: stratified bootstrap, score matrices, IQM/mean, probability of improvement."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from rliable import metrics

from prefrl import analysis


def fake_run(root, env, agent, rater, seed, finals, normalised=True, queries=0, done=True):
    """A run directory with a progress.csv whose true return rises linearly to ``finals``."""
    run_dir = root / env / agent / rater / f"seed{seed}"
    run_dir.mkdir(parents=True)
    steps = np.array([0, 500, 1000])
    returns = np.array([finals - 100.0, finals - 50.0, finals])
    frame = pd.DataFrame(
        {
            "env_steps": steps,
            "queries": (steps / 1000 * queries).astype(int),
            "wall_s": steps / 100.0,
            "true_return_mean": returns,
            "true_return_std": 1.0,
            "normalised_score": returns / 10.0 if normalised else np.nan,
        }
    )
    frame.to_csv(run_dir / "progress.csv", index=False)
    config = {"env": env, "agent": agent, "rater": rater, "seed": seed, "steps": 1000, "queries": queries}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "meta.json").write_text(json.dumps({"git_commit": "abc123", "packages": {"numpy": "2"}}))
    if done:
        (run_dir / "done").write_text("x\n")
    return run_dir


@pytest.fixture
def table(tmp_path):
    # two envs with normalisation; ppo best, spo better under partial_return than rm_ppo
    for env in ("env_a", "env_b"):
        for seed in range(4):
            fake_run(tmp_path, env, "ppo", "none", seed, 900 + 10 * seed)
            fake_run(tmp_path, env, "spo", "partial_return", seed, 500 + 10 * seed, queries=200)
            fake_run(tmp_path, env, "rm_ppo", "partial_return", seed, 300 + 10 * seed, queries=200)
            fake_run(tmp_path, env, "rm_ppo", "regret", seed, 200 + 10 * seed, queries=200)
    return analysis.load_runs(tmp_path, only_done=True)


def test_bootstrap_ci_reproducible_and_contains_point():
    scores = np.random.default_rng(0).normal(size=(10, 3))
    point, ci = analysis.bootstrap_ci(lambda s: np.array([s.mean()]), scores, reps=300, seed=1)
    _, ci2 = analysis.bootstrap_ci(lambda s: np.array([s.mean()]), scores, reps=300, seed=1)
    assert point == pytest.approx(scores.mean())
    np.testing.assert_array_equal(ci, ci2)
    assert ci[0, 0] < point[0] < ci[1, 0]
    # the CI of the mean of 30 standard normals is roughly +- 2 * 1 / sqrt(30)
    assert 0.4 < ci[1, 0] - ci[0, 0] < 1.1
    _, ci3 = analysis.bootstrap_ci(lambda s: np.array([s.mean()]), scores, reps=300, seed=2)
    assert not np.array_equal(ci, ci3)


def test_bootstrap_is_stratified_by_task():
    # every run of a task has the same score: resampling runs within a task never changes the mean, so a
    # stratified bootstrap gives a zero-width interval (an unstratified one would not)
    scores = np.tile(np.array([[0.0, 10.0, 100.0]]), (5, 1))
    point, ci = analysis.bootstrap_ci(lambda s: np.array([s.mean()]), scores, reps=200, seed=0)
    assert ci[0, 0] == ci[1, 0] == pytest.approx(point[0]) == pytest.approx(110 / 3)


def test_bootstrap_rejects_bad_shape():
    with pytest.raises(ValueError, match="runs"):
        analysis.bootstrap_ci(np.mean, np.zeros(5))


def test_iqm_contrast_difference_and_difference_of_drops():
    rng = np.random.default_rng(0)
    a, b = rng.normal(80.0, 2.0, 8), rng.normal(50.0, 2.0, 8)
    point, low, high = analysis.iqm_contrast((1, -1), a, b, reps=500)
    assert point == pytest.approx(analysis.iqm(a) - analysis.iqm(b))
    assert 20.0 < low < point < high < 40.0
    # A drops by ~30 under noise, B by ~0: the difference of drops is ~30 and its interval excludes 0
    a_noisy, b_noisy = a - 30.0 + rng.normal(0, 1, 8), b + rng.normal(0, 1, 8)
    point, low, high = analysis.iqm_contrast((1, -1, -1, 1), a, a_noisy, b, b_noisy, reps=500)
    assert 25.0 < low < point < high < 35.0
    # identical samples: a contrast of zero with a zero-width interval only if nothing varies
    flat = np.full(5, 3.0)
    assert analysis.iqm_contrast((1, -1), flat, flat, reps=50) == (0.0, 0.0, 0.0)


def test_iqm_contrast_needs_one_weight_per_sample():
    with pytest.raises(ValueError, match="one weight per sample"):
        analysis.iqm_contrast((1, -1), np.zeros(3))


def test_score_matrices_common_tasks_and_rectangular(tmp_path):
    for seed in range(3):
        fake_run(tmp_path, "env_a", "ppo", "none", seed, 100.0 + seed)
        fake_run(tmp_path, "env_a", "spo", "partial_return", seed, 50.0 + seed)
    fake_run(tmp_path, "env_b", "ppo", "none", 0, 100.0)  # env_b only for ppo, one seed
    fake_run(tmp_path, "env_b", "spo", "partial_return", 0, 70.0)
    fake_run(tmp_path, "env_c", "ppo", "none", 0, 1.0)  # not run by spo: dropped
    table = analysis.load_runs(tmp_path)
    scores, tasks = analysis.score_matrices(table, "true_return_mean")
    assert tasks == ["env_a", "env_b"]
    assert set(scores) == {"ppo", "spo [partial_return]"}
    assert scores["ppo"].shape == (1, 2)  # env_b has one seed: each algorithm keeps min seeds over envs
    np.testing.assert_allclose(scores["spo [partial_return]"], [[50.0, 70.0]])


def test_aggregate_table_matches_rliable(table):
    agg = analysis.aggregate_table(table, reps=200)
    assert set(agg["group"]) == {"all envs"} and set(agg["metric"]) == {"normalised_score"}
    scores, _ = analysis.score_matrices(table, "normalised_score")
    for row in agg.itertuples():
        assert row.iqm == pytest.approx(metrics.aggregate_iqm(scores[row.algorithm]))
        assert row.mean == pytest.approx(metrics.aggregate_mean(scores[row.algorithm]))
        assert row.iqm_low <= row.iqm <= row.iqm_high and row.mean_low <= row.mean <= row.mean_high
        assert (row.runs, row.tasks) == (4, 2)
    by_alg = agg.set_index("algorithm")["mean"]
    assert by_alg["ppo"] > by_alg["spo [partial_return]"] > by_alg["rm_ppo [partial_return]"]


def test_groups_fall_back_to_per_env_true_return(tmp_path):
    for seed in range(2):
        fake_run(tmp_path, "env_a", "ppo", "none", seed, 10.0, normalised=False)
        fake_run(tmp_path, "env_b", "ppo", "none", seed, 1000.0, normalised=False)
    table = analysis.load_runs(tmp_path)
    groups = analysis.aggregate_groups(table)
    # raw returns of different envs are never pooled
    assert [(g, m) for g, _, m in groups] == [("env_a", "true_return_mean"), ("env_b", "true_return_mean")]


def test_improvement_pairs_skip_cross_rater():
    algos = ["ppo", "spo [a]", "rm_ppo [a]", "rm_ppo [b]"]
    pairs = analysis.improvement_pairs(algos)
    assert ("rm_ppo [a]", "spo [a]") in pairs
    assert ("ppo", "rm_ppo [b]") in pairs
    assert all({x, y} != {"rm_ppo [b]", "spo [a]"} for x, y in pairs)
    assert all({x, y} != {"rm_ppo [a]", "rm_ppo [b]"} for x, y in pairs)


def test_probability_of_improvement(table):
    scores, _ = analysis.score_matrices(table, "normalised_score")
    result = analysis.probability_of_improvement(
        scores, pairs=[("ppo", "spo [partial_return]"), ("spo [partial_return]", "ppo")], reps=200
    )
    # every ppo run beats every spo run: P = 1 and 0, with degenerate CIs
    assert result["probability"].tolist() == pytest.approx([1.0, 0.0])
    same = analysis.probability_of_improvement({"a": scores["ppo"], "b": scores["ppo"].copy()}, [("a", "b")])
    assert same["probability"].iloc[0] == pytest.approx(0.5)


@pytest.mark.parametrize("runs", [(5, 5), (3, 7), (1, 4)])
def test_improvement_probability_equals_rliable(runs):
    rng = np.random.default_rng(runs[1])
    x = rng.normal(size=(runs[0], 3)).round(1)  # rounding makes ties
    y = rng.normal(size=(runs[1], 3)).round(1)
    assert analysis.improvement_probability(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    assert analysis.improvement_probability(x, y) + analysis.improvement_probability(y, x) == pytest.approx(
        1.0
    )


def test_summary_with_ci(table):
    summary = analysis.summary_with_ci(table, reps=200)
    assert len(summary) == 8  # 2 envs x (ppo, spo, rm_ppo x 2 raters)
    row = summary[(summary["env"] == "env_a") & (summary["agent"] == "ppo")].iloc[0]
    finals = np.array([900, 910, 920, 930]) / 10.0
    assert row["metric"] == "normalised_score" and row["seeds"] == 4
    assert row["mean"] == pytest.approx(finals.mean())
    assert row["iqm"] == pytest.approx(metrics.aggregate_iqm(finals[:, None]))
    assert row["mean_low"] >= finals.min() and row["mean_high"] <= finals.max()
    assert row["env_steps"] == 1000 and row["queries"] == 0


def test_final_score_summary_of_one_cell(table):
    cell = table[(table["env"] == "env_a") & (table["agent"] == "ppo")]
    summary = analysis.final_score_summary(cell, reps=200)
    finals = np.array([900, 910, 920, 930]) / 10.0
    assert summary["seeds"] == 4 and summary["median"] == pytest.approx(np.median(finals))
    assert summary["min"] == pytest.approx(finals.min())
    assert summary["iqm"] == pytest.approx(metrics.aggregate_iqm(finals[:, None]))
    assert summary["iqm_low"] <= summary["iqm"] <= summary["iqm_high"]
    with pytest.raises(ValueError, match="one \\(env, agent, rater\\) cell, got 8"):
        analysis.final_score_summary(table, reps=10)


def test_rater_agreement_matrix():
    raters = ["partial_return", "mistake:eps=0.3"]
    matrix = analysis.rater_agreement("pendulum", raters, num_pairs=500, num_segments=100)
    values = matrix.to_numpy()
    np.testing.assert_allclose(np.diag(values), 1.0)
    np.testing.assert_allclose(values, values.T)
    # 30% flips of strict labels: agreement near 0.7
    assert 0.6 < values[0, 1] < 0.8


def test_missing_normalised_scores_are_filled_from_the_env_spec(tmp_path):
    """A run that started before the env had anchors gets them at load time (same formula)."""
    from prefrl.envs import load_env_spec

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        yaml.safe_dump({"env": "pendulum", "agent": "ppo", "rater": None, "seed": 0})
    )
    pd.DataFrame(
        {"env_steps": [0, 100], "true_return_mean": [-1200.0, -200.0], "normalised_score": [np.nan, np.nan]}
    ).to_csv(run / "progress.csv", index=False)
    table = analysis.load_runs(tmp_path)
    expected = load_env_spec("pendulum").normalise(np.array([-1200.0, -200.0]))
    np.testing.assert_allclose(table["normalised_score"], expected)


def test_upsert_rows_replaces_by_key_and_keeps_the_rest(tmp_path):
    from prefrl.analysis import upsert_rows

    path = tmp_path / "sub" / "table.csv"
    upsert_rows(path, [{"env": "b", "x": 1.0}, {"env": "a", "x": 2.0}])
    table = upsert_rows(path, [{"env": "b", "x": 3.123456789, "y": 5}])
    assert list(table["env"]) == ["a", "b"]
    reread = pd.read_csv(path)
    assert reread.set_index("env")["x"].to_dict() == {"a": 2.0, "b": 3.1235}
    assert np.isnan(reread.set_index("env").loc["a", "y"])  # a new column leaves old rows empty


def test_tables_report_asked_and_answered_queries_and_mark_unbudgeted_runs():
    rows = []
    for agent, unbudgeted in (("rm_ppo", np.nan), ("heron", 1.0)):
        for seed in range(3):
            rows.append(
                {"env": "pendulum", "agent": agent, "rater": "r", "seed": seed, "env_steps": 1000,
                 "true_return_mean": -200.0 - seed, "queries": 100, "queries_asked": 100,
                 "queries_answered": 80 + seed, "wall_s": 10.0, "unbudgeted": unbudgeted}
            )  # fmt: skip
    runs = pd.DataFrame(rows)
    summary = analysis.summary_table(runs).set_index("agent")
    assert summary.loc["rm_ppo", "queries_answered"] == 81 and summary.loc["rm_ppo", "queries_asked"] == 100
    assert summary.loc["heron", "unbudgeted"] and not summary.loc["rm_ppo", "unbudgeted"]
    final = analysis.summary_with_ci(runs, reps=50).set_index("agent")
    assert final.loc["heron", "unbudgeted"] and not final.loc["rm_ppo", "unbudgeted"]
    assert final.loc["heron", "queries_answered"] == 81


def test_score_cells_formats_both_intervals_from_any_row_kind():
    from collections import namedtuple

    from prefrl.analysis import score_cells

    values = {
        "iqm": 82.14,
        "iqm_low": 67.66,
        "iqm_high": 90.2,
        "mean": 80.5,
        "mean_low": 71.0,
        "mean_high": 88.25,
    }
    expected = "82.1 [67.7, 90.2] | 80.5 [71.0, 88.2]"
    assert score_cells(values) == expected
    assert score_cells(namedtuple("Row", values)(**values)) == expected
    assert score_cells(pd.Series(values)) == expected
