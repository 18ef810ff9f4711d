"""The demo runner (``make demo``): a comparison grid that ends with curves, a summary and a report."""

from __future__ import annotations

import pandas as pd
import pytest

from prefrl import demo


@pytest.mark.slow  # ~19 s: trains the demo grid (ppo, rm_ppo), then resumes it
def test_demo_writes_curves_summary_and_report(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_GRID", [(["ppo", "rm_ppo", "no_such_agent"], "partial_return")])
    text = demo.run_demo(out=tmp_path, seeds=1, steps=256)
    for name in ("learning_curves.png", "learning_curves.svg", "summary.csv", "summary.md", "report.md"):
        assert (tmp_path / name).is_file(), name
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary["agent"]) == {"ppo", "rm_ppo"}  # unknown agents are left out, not fatal
    assert summary["mean"].notna().all()  # the final normalised score per agent
    assert "rm_ppo" in text
    # finished runs are skipped: a second demo resumes instead of retraining
    progress = sorted((tmp_path / "runs").rglob("progress.csv"))
    stamps = [p.stat().st_mtime_ns for p in progress]
    demo.run_demo(out=tmp_path, seeds=1, steps=256)
    assert [p.stat().st_mtime_ns for p in progress] == stamps
