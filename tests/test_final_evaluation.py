"""The end-of-run evaluation: held-out start states shared by every run, final_eval.json written once and
read back, used by the analysis as the final score, and clear errors (``prefrl evaluate``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import prefrl.final_evaluation as fe
from prefrl import cli
from prefrl.analysis import final_scores, scan_runs
from prefrl.errors import RunDirError
from prefrl.evaluation import EVAL_SEED_OFFSET, episode_returns
from prefrl.experiment import run_experiment
from prefrl.render import load_policy


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, tiny_ppo):
    """Two finished tiny ppo runs (seeds 0 and 1) under one sweep-like folder."""
    root = tmp_path_factory.mktemp("final_eval")
    for seed in (0, 1):
        run_experiment("pendulum", "ppo", None, seed, steps=128, out=root / f"seed{seed}", overrides=tiny_ppo,
                       eval_freq=128, n_eval_episodes=2, progress_bar=False)  # fmt: skip
    return root


@pytest.fixture
def runs(finished_runs, tmp_path):
    """A private copy of :func:`finished_runs` (tests write final_eval.json into it)."""
    return shutil.copytree(finished_runs, tmp_path / "runs")


def test_final_eval_runs_the_held_out_episodes_and_writes_them(runs, pendulum):
    result = fe.evaluate_final(runs / "seed0", episodes=6)
    assert result.episodes == 6 and len(result.returns) == 6 and result.seed == fe.FINAL_EVAL_SEED
    assert result.mean == pytest.approx(np.mean(result.returns))
    assert result.normalised_score == pytest.approx(float(pendulum.normalise(result.mean)))
    # the same episodes as running the saved policy by hand from the final seed
    _, predict = load_policy(runs / "seed0")
    np.testing.assert_allclose(result.returns, episode_returns(predict, pendulum, 6, fe.FINAL_EVAL_SEED))
    assert fe.read_final_eval(runs / "seed0") == result


def test_final_start_states_are_shared_by_runs_and_disjoint_from_training(runs, pendulum):
    _, predict = load_policy(runs / "seed0")
    final = episode_returns(predict, pendulum, 4, fe.FINAL_EVAL_SEED)
    progress = episode_returns(predict, pendulum, 4, 0 + EVAL_SEED_OFFSET)
    assert not np.allclose(final, progress)  # other start states than the progress evaluations
    # one test set: the seed does not depend on the run, only the policy does
    a, b = fe.evaluate_final(runs / "seed0", 4), fe.evaluate_final(runs / "seed1", 4)
    assert a.seed == b.seed == fe.FINAL_EVAL_SEED and a.returns != b.returns
    # run seeds up to 1e9: training seeds seed + i and progress seeds seed + EVAL_SEED_OFFSET + i stay below
    assert fe.FINAL_EVAL_SEED > 10**9 + EVAL_SEED_OFFSET + 64


def test_an_evaluated_run_is_read_back_not_rerun(runs, monkeypatch):
    first = fe.evaluate_final(runs / "seed0", episodes=3)
    monkeypatch.setattr(fe, "episode_returns", lambda *a, **k: pytest.fail("evaluated again"))
    assert fe.evaluate_final(runs / "seed0", episodes=3) == first
    monkeypatch.undo()
    again = fe.evaluate_final(runs / "seed0", episodes=4)  # other settings: evaluated and replaced
    assert again.episodes == 4 and fe.read_final_eval(runs / "seed0") == again


def test_evaluate_final_runs_resumes_and_reports_reuse(runs):
    fe.evaluate_final(runs / "seed0", episodes=3)
    outcomes = list(fe.evaluate_final_runs([runs], episodes=3))
    assert [o.run_dir.name for o in outcomes] == ["seed0", "seed1"]
    assert [o.reused for o in outcomes] == [True, False]
    assert all(o.error is None and o.result.episodes == 3 for o in outcomes)


def test_unfinished_run_and_bad_arguments_are_errors(runs):
    (runs / "seed0" / "done").unlink()
    with pytest.raises(RunDirError, match="not a finished run"):
        fe.evaluate_final(runs / "seed0")
    with pytest.raises(ValueError, match="episodes"):
        fe.evaluate_final(runs / "seed1", episodes=0)
    with pytest.raises(RunDirError, match="no such directory"):
        list(fe.evaluate_final_runs([runs / "missing"]))


GOOD = {"episodes": 2, "seed": 0, "returns": [1.0, 2.0], "mean": 1.5, "std": 0.5, "normalised_score": None,
        "env": "pendulum"}  # fmt: skip


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a final evaluation"),
        (json.dumps({**GOOD, "returns": [1.0]}), "finite returns"),
        (json.dumps({**GOOD, "episodes": "2"}), "not a final evaluation"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "mean"}), "not a final evaluation"),
    ],
)
def test_damaged_final_eval_is_named_and_reevaluated(runs, content, problem):
    (runs / "seed0" / fe.FINAL_EVAL_FILE).write_text(content)
    with pytest.raises(RunDirError, match=problem):
        fe.read_final_eval(runs / "seed0")
    # the analysis keeps the run, scored by its last progress row, and says why
    scan = scan_runs(runs)
    assert any(problem in s.reason and s.kind == "partial" for s in scan.skipped)
    assert set(final_scores(scan.table)["score_source"]) == {"last_eval"}
    # evaluating again replaces the damaged file
    assert fe.evaluate_final(runs / "seed0", episodes=2).episodes == 2


def test_analysis_scores_runs_by_their_final_evaluation(runs):
    curve = scan_runs(runs).table
    before = final_scores(curve).set_index("seed")
    result = fe.evaluate_final(runs / "seed1", episodes=5)
    after = final_scores(scan_runs(runs).table).set_index("seed")
    assert after.loc[0, "score_source"] == "last_eval" and after.loc[1, "score_source"] == "final_eval"
    assert after.loc[0, "true_return_mean"] == before.loc[0, "true_return_mean"]
    assert after.loc[1, "true_return_mean"] == pytest.approx(result.mean)
    assert after.loc[1, "normalised_score"] == pytest.approx(result.normalised_score)
    assert after.loc[1, "final_episodes"] == 5
    # the learning curve (every progress row) is unchanged
    np.testing.assert_array_equal(curve["true_return_mean"], scan_runs(runs).table["true_return_mean"])


def test_cli_evaluate_prints_one_line_per_run(runs, capsys):
    assert cli.main(["evaluate", str(runs), "--episodes", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("over 2 episodes, score" in line for line in lines)
    assert json.loads((runs / "seed1" / fe.FINAL_EVAL_FILE).read_text())["episodes"] == 2
    assert cli.main(["evaluate", str(runs), "--episodes", "2"]) == 0
    assert "(already evaluated)" in capsys.readouterr().out


def test_cli_evaluate_bad_input_is_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no finished run" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", str(tmp_path), "--episodes", "0"])
    assert exit_info.value.code == 2 and "--episodes" in capsys.readouterr().err


def test_cli_evaluate_lists_runs_it_cannot_read(runs, capsys):
    config = runs / "seed0" / "config.yaml"
    config.write_text(config.read_text().replace("agent: ppo", "agent: no_such_agent"))
    assert cli.main(["evaluate", str(runs), "--episodes", "2"]) == 2
    captured = capsys.readouterr()
    assert "no_such_agent" in captured.err and "1 of 2 run(s)" in captured.err
    assert "seed1" in captured.out  # the other run is still evaluated
