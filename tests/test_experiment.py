"""run_experiment: one run directory end to end, resumability, determinism, errors."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

import prefrl.agents
import prefrl.agents.registry
import prefrl.config
import prefrl.experiment
from prefrl.agents import PPOAgent, list_agents, register_agent
from prefrl.errors import ConfigError, RunDirError, SpecError
from prefrl.evaluation import BASE_COLUMNS
from prefrl.experiment import resolve_settings, run_experiment
from prefrl.run_dir import beside_dir, default_run_dir, is_done
from prefrl.spec_utils import deep_update


@pytest.fixture(scope="module")
def tiny_run(tiny_ppo):
    """``tiny_run(out, seed=0, **kwargs)``: a tiny PPO run on Pendulum, 512 steps, evaluated every 256."""

    def tiny_run(out, seed=0, **kwargs):
        options = {"steps": 512, "queries": None, "overrides": tiny_ppo}
        options.update({"eval_freq": 256, "n_eval_episodes": 2}, **kwargs)
        return run_experiment("pendulum", "ppo", None, seed, out=out, **options)

    return tiny_run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_run):
    return tiny_run(tmp_path_factory.mktemp("runs") / "run")


def test_run_directory_contents(finished_run):
    run_dir = finished_run
    for name in ("config.yaml", "meta.json", "progress.csv", "policy.zip", "done"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").glob("events.out.tfevents.*"))
    assert not (run_dir / "error.txt").exists() and not list(run_dir.glob("*.tmp"))
    # the done marker is the last file written
    others = [p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "done"]
    assert (run_dir / "done").stat().st_mtime_ns >= max(others)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert {k: config[k] for k in ("env", "agent", "rater", "seed", "steps", "queries")} == {
        "env": "pendulum", "agent": "ppo", "rater": "none", "seed": 0, "steps": 512, "queries": 0,
    }  # fmt: skip
    assert config["config"]["policy_kwargs"]["net_arch"] == [16] and config["config"]["eval_freq"] == 256
    assert config["config"]["ppo"]["gamma"] == 0.9  # the pendulum section of agents/ppo.yaml

    meta = json.loads((run_dir / "meta.json").read_text())
    assert {"git_commit", "packages", "hostname", "start_time", "end_time", "wall_s"} <= set(meta)
    assert meta["packages"]["stable-baselines3"] and meta["packages"]["torch"]

    table = pd.read_csv(run_dir / "progress.csv")
    assert list(table.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert table["env_steps"].tolist() == [0, 256, 512]
    assert (table["true_return_mean"] < 0).all() and (table["true_return_std"] >= 0).all()
    assert "train/value_loss" in table.columns


@pytest.fixture
def no_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(prefrl.experiment, "_train", no_training)


def test_finished_run_is_skipped(tiny_run, finished_run, no_training):
    before = (finished_run / "progress.csv").stat().st_mtime_ns
    assert tiny_run(finished_run) == finished_run
    assert (finished_run / "progress.csv").stat().st_mtime_ns == before


def test_settings_hash_is_recorded(finished_run, tiny_ppo):
    recorded = yaml.safe_load((finished_run / "config.yaml").read_text())["settings_hash"]
    settings = resolve_settings("pendulum", "ppo", None, 0, 512, None, tiny_ppo, 256, 2)
    assert recorded == settings.digest and len(recorded) == 64
    assert settings.with_seed(1).digest != recorded


@pytest.mark.parametrize(
    ("kwargs", "keys"),
    [
        ({"steps": 1024}, "config.total_steps, steps"),
        ({"overrides": {"ppo": {"learning_rate": 3e-4}}}, "config.ppo.learning_rate"),
        ({"n_eval_episodes": 3}, "config.n_eval_episodes"),
    ],
)
def test_changed_settings_stop_with_the_differing_keys(
    tiny_run, finished_run, tiny_ppo, no_training, kwargs, keys
):
    if "overrides" in kwargs:
        kwargs["overrides"] = deep_update(copy.deepcopy(tiny_ppo), kwargs["overrides"])
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    with pytest.raises(ConfigError) as info:
        tiny_run(finished_run, **kwargs)
    message = str(info.value)
    assert f"(differing: {keys})" in message and "\n" not in message and "--beside" in message
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


def test_beside_writes_a_second_run(tiny_run, tmp_path):
    first = tiny_run(tmp_path / "run", steps=256)
    second = tiny_run(tmp_path / "run", steps=512, beside=True)
    digest = yaml.safe_load((second / "config.yaml").read_text())["settings_hash"]
    assert second == beside_dir(first, digest) == tmp_path / f"run-{digest[:8]}"
    assert is_done(first) and is_done(second)
    assert pd.read_csv(first / "progress.csv")["env_steps"].iloc[-1] == 256
    assert pd.read_csv(second / "progress.csv")["env_steps"].iloc[-1] == 512
    # resumable as any run: the same call finds the run beside and trains nothing
    done = (second / "done").stat().st_mtime_ns
    assert tiny_run(tmp_path / "run", steps=512, beside=True) == second
    assert (second / "done").stat().st_mtime_ns == done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", second.name]


def test_run_from_before_settings_hashes_compares_its_config(tiny_run, finished_run, tmp_path, no_training):
    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["settings_hash"]
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert tiny_run(old) == old  # the same config: skipped, no training
    with pytest.raises(ConfigError, match=r"differing: config.total_steps, steps\)"):
        tiny_run(old, steps=1024)


def test_unfinished_attempt_is_restarted_cleanly(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("stale: true\n")
    (run_dir / "progress.csv").write_text("env_steps,true_return_mean\n0,1.0\n99999,5.0\n")
    (run_dir / "leftover.bin").write_text("from the killed attempt")
    tiny_run(run_dir, steps=256)
    assert is_done(run_dir) and not (run_dir / "leftover.bin").exists()
    assert pd.read_csv(run_dir / "progress.csv")["env_steps"].tolist() == [0, 256]


def test_refuses_a_foreign_directory(tiny_run, tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(RunDirError, match="not a prefrl run directory"):
        tiny_run(tmp_path)
    assert (tmp_path / "notes.txt").exists()


def test_same_seed_same_returns(tiny_run, tmp_path):
    tables = [pd.read_csv(tiny_run(tmp_path / f"run{k}", seed=5) / "progress.csv") for k in range(2)]
    np.testing.assert_array_equal(tables[0]["true_return_mean"], tables[1]["true_return_mean"])
    np.testing.assert_array_equal(tables[0]["train/value_loss"], tables[1]["train/value_loss"])
    other = pd.read_csv(tiny_run(tmp_path / "other", seed=6) / "progress.csv")
    assert not np.array_equal(tables[0]["true_return_mean"], other["true_return_mean"])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"overrides": {"ppo": {"n_step": 64}}}, "did you mean 'n_steps'"),
     ({"agent": "ppoo"}, "did you mean 'ppo'"),
     ({"steps": -5}, "steps must be a non-negative integer"),
     ({"eval_freq": 0}, "eval_freq must be positive")],
)  # fmt: skip
def test_invalid_input_fails_before_anything_is_written(tiny_ppo, tmp_path, kwargs, match):
    agent = kwargs.pop("agent", "ppo")
    options = {"steps": 512, "overrides": tiny_ppo, **kwargs}
    with pytest.raises(SpecError, match=match):
        run_experiment("pendulum", agent, None, 0, out=tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()


def test_ppo_with_a_rater_records_none(tiny_ppo, tmp_path):
    with pytest.warns(UserWarning, match="ignoring rater 'partial_return'"):
        run_dir = run_experiment(
            "pendulum", "ppo", "partial_return", 0, steps=128, out=tmp_path / "run", overrides=tiny_ppo,
            eval_freq=128, n_eval_episodes=1,
        )  # fmt: skip
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["rater"] == "none"


class FailingPPO(PPOAgent):
    name = "_failing_ppo"

    def learn(self, total_steps, query_budget, callback=None):
        raise RuntimeError("boom in learn")


class PreferencePPO(PPOAgent):
    name = "_preference_ppo"
    requires_rater = True


@pytest.fixture
def test_agents(tiny_ppo, tmp_path, monkeypatch):
    """Register test agents (for this test only) with their own agents/ directory."""
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    list_agents()  # load the built-in agents first, so the patched registry is restored with them
    monkeypatch.setattr(prefrl.agents.registry, "_REGISTRY", dict(prefrl.agents.registry._REGISTRY))
    for cls in (FailingPPO, PreferencePPO):
        register_agent(cls)
        (agents_dir / f"{cls.name}.yaml").write_text(yaml.safe_dump({"defaults": tiny_ppo}))
    monkeypatch.setattr(prefrl.config, "AGENTS_DIR", agents_dir)


def test_failure_writes_error_and_no_done(tmp_path, test_agents):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom in learn"):
        run_experiment("pendulum", "_failing_ppo", None, 0, steps=128, out=run_dir)
    assert "boom in learn" in (run_dir / "error.txt").read_text()
    assert "Traceback" in (run_dir / "error.txt").read_text()
    assert not is_done(run_dir)


def test_agent_needing_a_rater_without_one(tmp_path, test_agents):
    with pytest.raises(SpecError, match="needs a rater"):
        run_experiment("pendulum", "_preference_ppo", "none", 0, steps=128, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "rater, part", [(None, "none"), ("mistake:eps=0.2", "mistake_eps=0.2"), ("a b/c", "a_b_c")]
)
def test_default_run_dir(rater, part):
    path = default_run_dir("pendulum", "rm_ppo", rater, 3)
    assert path.parts == ("runs", "pendulum", "rm_ppo", part, "seed3")
