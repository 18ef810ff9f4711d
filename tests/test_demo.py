"""The demo runner (``make demo``): a comparison grid that ends with curves, a summary and a report."""

from __future__ import annotations

import pandas as pd
import pytest

from prefrl import demo
from prefrl.agents import get_agent_class, list_agents


@pytest.mark.slow  # ~30 s: trains the demo grid (ppo, rm_ppo, a short bc), then resumes it
def test_demo_writes_curves_summary_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFRL_DATA_DIR", str(tmp_path / "data"))
    grid = [
        demo.DemoGroup(("ppo", "rm_ppo", "no_such_agent"), "partial_return", "partial-return labels"),
        demo.DemoGroup(("bc",), "regret", "regret labels", offline=True, notes={"bc": "a tiny budget"}),
    ]
    monkeypatch.setattr(demo, "DEMO_GRID", grid)
    text = demo.run_demo(out=tmp_path, seeds=1, steps=256, offline_steps=20)
    for name in ("learning_curves.png", "learning_curves.svg", "summary.csv", "summary.md", "report.md"):
        assert (tmp_path / name).is_file(), name
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("agent")
    assert set(summary.index) == {"ppo", "rm_ppo", "bc"}  # unknown agents are left out, not fatal
    assert summary["mean"].notna().all()  # the final normalised score per agent
    assert summary.loc["bc", "rater"] == "regret"
    assert summary.loc["bc", "setting"].startswith("regret labels; 20 gradient steps on ")
    assert summary.loc["bc", "note"] == "a tiny budget"
    assert summary.loc["rm_ppo", "setting"].startswith("partial-return labels; 256 env steps, ")
    assert "rm_ppo" in text and "a tiny budget" in (tmp_path / "summary.md").read_text()
    svg = (tmp_path / "learning_curves.svg").read_text()
    assert "gradient steps" in svg and "environment steps" in svg  # offline agents on their own axis
    # finished runs are skipped: a second demo resumes instead of retraining
    progress = sorted((tmp_path / "runs").rglob("progress.csv"))
    stamps = [p.stat().st_mtime_ns for p in progress]
    demo.run_demo(out=tmp_path, seeds=1, steps=256, offline_steps=20)
    assert [p.stat().st_mtime_ns for p in progress] == stamps


def test_every_agent_is_in_the_grid_once_with_the_labels_its_method_assumes():
    agents = [agent for group in demo.DEMO_GRID for agent in group.agents]
    assert sorted(agents) == sorted(list_agents())
    by_agent = {agent: group for group in demo.DEMO_GRID for agent in group.agents}
    # CPL is derived for regret-based preferences; p_iql (its paper's baseline) and bc learn from the same
    # dataset
    assert by_agent["cpl"].rater == by_agent["p_iql"].rater == by_agent["bc"].rater == "regret"
    assert by_agent["heron"].rater == "hierarchical"
    for agent, group in by_agent.items():
        assert group.offline == (agent in ("cpl", "p_iql", "bc"))
        assert get_agent_class(agent).requires_rater == (group.rater != "none"), agent
    # the rows expected to be low say why
    assert by_agent["cpl"].notes["cpl"] and by_agent["bc"].notes["bc"]


def test_the_regret_rater_is_available_on_the_demo_env():
    # the shipped Pendulum oracle provides V*: the cpl/bc group runs instead of being skipped
    assert demo._rater_problem("regret", demo.DEFAULT_ENV) is None
    assert "no_such_rater" in str(demo._rater_problem("no_such_rater", demo.DEFAULT_ENV))


def test_row_notes_give_each_row_its_setting_and_explain_low_rows():
    summary = pd.DataFrame(
        {
            "env": "pendulum",
            "agent": ["ppo", "spo", "cpl", "heron"],
            "rater": ["none", "partial_return", "regret", "hierarchical"],
            "mean": [92.0, 41.0, 60.0, 88.0],
            "queries": [0.0, 32_000.0, 3600.0, 100_000.0],
        }
    )
    rows = demo.row_notes(summary, demo.DEMO_GRID, online_steps=100_000, offline_steps=4000).set_index(
        "agent"
    )
    assert rows.loc["ppo", "setting"] == "true env reward, no queries (the reference); 100,000 env steps"
    assert rows.loc["spo", "setting"] == "noise-free partial-return labels; 100,000 env steps, 32,000 queries"
    assert rows.loc["cpl", "setting"].endswith("; 4,000 gradient steps on 3,600 labelled pairs")
    assert "regret" in rows.loc["cpl", "setting"]
    assert rows.loc["ppo", "note"] == ""  # not low: nothing to explain
    assert rows.loc["cpl", "note"] == demo.DEMO_GRID[-1].notes["cpl"]  # expected low: the reason
    assert "below 70" in rows.loc["spo", "note"]  # low without a known reason: said so
