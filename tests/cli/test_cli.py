"""The ``prefrl`` command line: sub-commands work and bad input gives one clear line, exit status 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from prefrl.cli import main
from prefrl.config import parse_overrides


def test_rate_json_reports_every_rater(capsys):
    code = main(
        ["rate", "--env", "pendulum", "--rater", "partial_return", "--rater", "mistake:eps=0.2",
         "--rater", "intransitive", "--pairs", "2000", "--seed", "3", "--json"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["rater"]: row for row in report["raters"]}
    assert set(rows) == {"partial_return", "mistake:eps=0.2", "intransitive"}
    assert rows["partial_return"]["agreement"] == pytest.approx(1.0)
    assert rows["mistake:eps=0.2"]["agreement"] == pytest.approx(0.8, abs=0.04)
    assert rows["partial_return"]["cycle_rate"] == 0.0
    assert rows["intransitive"]["cycle_rate"] > 0.0
    assert all(row["queries"] == 2000 for row in rows.values())


def test_rate_table_and_mixed_policy(capsys):
    assert (
        main(["rate", "--env", "pendulum", "--rater", "regret", "--pairs", "500", "--policy", "mixed"]) == 0
    )
    out = capsys.readouterr().out
    assert "regret" in out and "pairs/s" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rate", "--env", "pendullum", "--rater", "partial_return"], "did you mean 'pendulum'"),
        (["rate", "--env", "pendulum", "--rater", "mistake:eps=1.5"], "eps"),
        (["rate", "--env", "pendulum", "--rater", "stoc:beta=-1"], "beta"),
        (["rate", "--env", "pendulum", "--rater", "partial_retrun"], "did you mean 'partial_return'"),
        (["run", "--env", "pendulum", "--agent", "ppoo"], "did you mean 'ppo'"),
        (["run", "--env", "pendulum", "--agent", "ppo", "--set", "ppo.learning_rat=1e-3"], "learning_rate"),
        (["run", "--env", "pendulum", "--agent", "ppo", "--set", "novalue"], "KEY=VALUE"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path):
    if argv[0] == "run":
        argv = [*argv, "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_run_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--env", "pendulum", "--agent", "ppo", "--seed", "1", "--steps", "256", "--out", str(out),
            "--eval-freq", "128", "--eval-episodes", "1", "--set", "ppo.n_steps=64", "--set", "n_envs=1",
            "--set", "policy_kwargs.net_arch=[16]"]  # fmt: skip
    assert main(argv) == 0
    assert (out / "done").exists() and (out / "config.yaml").exists()
    progress = pd.read_csv(out / "progress.csv")
    assert {"env_steps", "true_return_mean", "normalised_score"} <= set(progress.columns)
    assert progress["env_steps"].iloc[-1] >= 256


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "pendulum" in out and "ppo" in out and "partial_return" in out


def test_parse_overrides_nests_and_parses_yaml():
    assert parse_overrides(["ppo.learning_rate=3e-4", "n_envs=2", "policy_kwargs.net_arch=[8, 8]"]) == {
        "ppo": {"learning_rate": 3e-4},
        "n_envs": 2,
        "policy_kwargs": {"net_arch": [8, 8]},
    }
