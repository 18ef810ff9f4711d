"""The study's front page: its headline table comes from per-run scores (benchmarks/study_assumptions.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import study_assumptions  # a benchmark script, not part of the installed package


def scores(cells: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [
        {"env": "pendulum", "agent": agent, "rater": rater, "seed": seed, "normalised_score": score}
        for (agent, rater), values in cells.items()
        for seed, score in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_headline_table_orders_raters_and_hides_cells_under_five_seeds():
    table = scores(
        {
            ("rm_ppo", "regret"): [50, 52, 54, 56, 58],
            ("rm_ppo", "partial_return"): [90, 91, 92, 93, 94],
            ("pebble", "partial_return"): [95, 95, 95, 95],  # 4 seeds: not reported
            ("ppo", "none"): [92, 92, 92, 92, 92],
        }
    )
    lines = study_assumptions.headline_table(table)
    assert lines[0].startswith("| rater | rm_ppo (partial return) | pebble (partial return) |")
    rows = [line for line in lines if line.startswith("| partial_return") or line.startswith("| regret")]
    assert rows[0].startswith("| partial_return | 92.0 [") and rows[0].endswith("| - |")
    assert rows[1].startswith("| regret | 54.0 [")
    assert lines[-1] == "References on the true reward: ppo 92.0 [92.0, 92.0]."


def test_replace_between_markers_keeps_the_rest_of_the_page():
    start, end = study_assumptions.HEADLINE_MARKERS
    page = f"# title\n\nbefore\n{start}\nold table\n{end}\nafter\n"
    new = study_assumptions.replace_between_markers(page, ["| a |", "|---|"])
    assert new == f"# title\n\nbefore\n{start}\n| a |\n|---|\n{end}\nafter\n"
    assert study_assumptions.replace_between_markers(new, ["| a |", "|---|"]) == new


@pytest.mark.parametrize("page", ["no markers\n", "<!-- /headline -->\n<!-- headline -->\n"])
def test_replace_between_markers_refuses_a_page_without_its_markers(page):
    with pytest.raises(SystemExit, match="needs one"):
        study_assumptions.replace_between_markers(page, ["x"])


def test_rater_rows_follow_the_study_order():
    table = pd.DataFrame({"rater": ["panel", "zeta", "none", "regret", "partial_return", "alpha"]})
    assert study_assumptions.rater_rows(table) == ["partial_return", "regret", "panel", "alpha", "zeta"]
    assert {"stoc", "mistake:eps=0.1"} <= set(study_assumptions.RATER_ORDER)
