"""The runnable examples of the docs (docs/examples/*.py, included into docs/extending.md) run as written.

Each runs in its own interpreter, as a user would run it (`python docs/examples/X.py OUT`): the rater
example registers a name at import, which a second import in one process would refuse.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def _run(name: str, tmp_path: Path) -> str:
    script, out = str(EXAMPLES / name), str(tmp_path)
    code = f"import runpy; print(runpy.run_path({script!r})['main']({out!r}))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFRL_ORACLE_DIR": str(tmp_path / "oracles")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("name", ["custom_env.py", "custom_rater.py", "custom_agent.py", "reward_model.py"])
def test_example_runs(name, tmp_path):
    out = _run(name, tmp_path)
    runs = [p.parent for p in tmp_path.rglob("done")]
    assert runs, f"{name} wrote no finished run:\n{out}"
    for run_dir in runs:
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["agent"]
        assert (run_dir / "env.yaml").is_file()


def test_every_example_is_tested_and_included_in_the_docs():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    tested = {"custom_env.py", "custom_rater.py", "custom_agent.py", "reward_model.py"}
    assert scripts == tested
    page = (EXAMPLES.parent / "extending.md").read_text()
    assert all(name in page for name in scripts)
