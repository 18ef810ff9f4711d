"""Where env specs come from: user files, PREFRL_SPEC_PATH, entry points, gym: ids; runs store their spec."""

from __future__ import annotations

import shutil
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import prefrl.envs
from prefrl.cli import main
from prefrl.envs import ENV_DIR, SpecShadowWarning, gym_env_spec, list_env_specs, load_env_spec, make_env
from prefrl.errors import OracleError, RaterError, SpecError
from prefrl.experiment import run_experiment
from prefrl.oracle import load_oracle, shipped_oracle_dir
from prefrl.raters import make_rater
from prefrl.run_dir import load_run_env_spec
from prefrl.sweep import run_sweep


def _user_spec(folder: Path, name: str, torque_weight: float = 0.5) -> Path:
    """A copy of the Pendulum spec under ``name`` with a different torque weight."""
    data = yaml.safe_load((ENV_DIR / "pendulum.yaml").read_text())
    data["factors"][2]["weight"] = torque_weight
    data["description"] = "pendulum with an expensive torque"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in ENV_DIR.glob("*.yaml")))
def test_to_dict_round_trips_every_builtin(name, tmp_path):
    spec = load_env_spec(name)
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecShadowWarning)
        again = load_env_spec(path)
    assert again.to_dict() == spec.to_dict()
    assert again.name == name and again.description


def test_spec_path_adds_folders_and_shadows_builtins_with_a_notice(tmp_path, monkeypatch):
    _user_spec(tmp_path / "a", "my_pendulum")
    _user_spec(tmp_path / "b", "pendulum", torque_weight=0.25)
    monkeypatch.setenv("PREFRL_SPEC_PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert {"my_pendulum", "pendulum", "hopper"} <= set(list_env_specs())
    assert load_env_spec("my_pendulum").factor_weights[2] == 0.5
    with pytest.warns(SpecShadowWarning, match="instead of the built-in"):
        shadow = load_env_spec("pendulum")
    assert shadow.factor_weights[2] == 0.25


def test_entry_point_folders(tmp_path, monkeypatch):
    _user_spec(tmp_path / "plugin", "plugin_pendulum")
    entry = metadata.EntryPoint("plugin", "os:getcwd", "prefrl.envs")
    entries = {"prefrl.envs": [entry]}
    monkeypatch.setattr(prefrl.envs.metadata, "entry_points", lambda group: entries.get(group, []))
    monkeypatch.chdir(tmp_path / "plugin")  # the entry point (os.getcwd) returns this folder
    assert load_env_spec("plugin_pendulum").description == "pendulum with an expensive torque"


def test_gym_spec_uses_the_env_reward_as_its_only_factor():
    spec = load_env_spec("gym:InvertedPendulum-v5,reset_noise_scale=0.05,horizon=120,segment_length=30")
    assert (spec.name, spec.gym_id, spec.horizon, spec.segment_length) == (
        "gym:InvertedPendulum-v5,reset_noise_scale=0.05,horizon=120,segment_length=30",
        "InvertedPendulum-v5",
        120,
        30,
    )
    assert spec.kwargs == {"reset_noise_scale": 0.05} and spec.factor_names == ["reward"]
    assert not spec.has_normalisation
    env = make_env(spec, seed=0)
    for _ in range(5):
        _, reward, *_, info = env.step(env.action_space.sample())
        np.testing.assert_allclose(spec.reward_from_factors(info["factors"]), reward)


@pytest.mark.parametrize(
    ("text", "match"),
    [("gym:NoSuchEnv-v0", "no gymnasium env registered"), ("gym:Pendulum-v1,oops", "expected key=value")],
)
def test_gym_spec_errors(text, match):
    with pytest.raises(SpecError, match=match):
        gym_env_spec(text)


@pytest.mark.parametrize("rater", ["hierarchical", "intransitive", "regret"])
def test_raters_needing_factors_or_an_oracle_refuse_gym_specs(rater):
    with pytest.raises((RaterError, SpecError, OracleError)):
        make_rater(rater, load_env_spec("gym:InvertedPendulum-v5"))


def test_run_stores_and_reloads_a_user_spec(tmp_path, tiny_ppo):
    path = _user_spec(tmp_path / "specs", "my_pendulum")
    run_dir = run_experiment(str(path), "ppo", None, 0, steps=256, out=tmp_path / "run", overrides=tiny_ppo)
    path.unlink()  # the run no longer needs the user's file
    spec = load_run_env_spec(run_dir)
    assert spec.name == "my_pendulum" and spec.factor_weights[2] == 0.5
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["env"] == "my_pendulum"
    assert (run_dir / "done").is_file()


def test_sweep_and_cli_accept_spec_files_and_gym_ids(tmp_path, tiny_ppo):
    path = _user_spec(tmp_path / "specs", "my_pendulum")
    result = run_sweep(
        [str(path), "gym:Pendulum-v1"], "ppo", None, 1, steps=256, out=tmp_path / "sweep", jobs=1,
        overrides=tiny_ppo, eval_freq=128, n_eval_episodes=1,
    )
    assert not result.failed and len(result.cells) == 2
    table = pd.concat(pd.read_csv(Path(c.run_dir) / "progress.csv") for c in result.cells)
    assert table["true_return_mean"].notna().all()
    assert main(["run", "--env", str(path), "--agent", "ppo", "--steps", "128", "--eval-freq", "128",
                 "--eval-episodes", "1", "--out", str(tmp_path / "cli"), "--set", "n_envs=1",
                 "--set", "ppo.n_steps=64"]) == 0
    assert load_run_env_spec(tmp_path / "cli").name == "my_pendulum"


def test_rate_accepts_a_spec_file(tmp_path, capsys):
    path = _user_spec(tmp_path / "specs", "my_pendulum")
    assert main(["rate", "--env", str(path), "--rater", "partial_return", "--pairs", "20"]) == 0
    assert "partial_return" in capsys.readouterr().out


def test_a_shadowing_spec_with_other_dynamics_does_not_get_the_builtin_oracle(tmp_path, pendulum):
    data = yaml.safe_load((ENV_DIR / "pendulum.yaml").read_text())
    data["kwargs"] = {"g": 5.0}
    path = tmp_path / "pendulum.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.warns(SpecShadowWarning):
        shadow = load_env_spec(path)
    assert load_oracle(pendulum).manifest.env_kwargs == {}  # the built-in loads (and is cached) first
    with pytest.raises(OracleError, match=r"other env settings.*kwargs \{\}.*'g': 5.0"):
        load_oracle(shadow)
    with pytest.raises(OracleError, match="other env settings"):
        make_rater("regret", shadow)


def test_runs_of_an_unanchored_spec_use_its_oracles_anchors(tmp_path, tiny_ppo, monkeypatch):
    data = yaml.safe_load((ENV_DIR / "pendulum.yaml").read_text())
    data.pop("normalisation")
    path = tmp_path / "bare_pendulum.yaml"
    path.write_text(yaml.safe_dump(data))
    oracles = tmp_path / "oracles"
    shutil.copytree(shipped_oracle_dir(load_env_spec("pendulum")), oracles / "bare_pendulum")
    monkeypatch.setenv("PREFRL_ORACLE_DIR", str(oracles))
    run_dir = run_experiment(str(path), "ppo", None, 0, steps=128, out=tmp_path / "run", overrides=tiny_ppo,
                             eval_freq=128, n_eval_episodes=1)
    manifest = load_oracle(load_env_spec(path)).manifest
    stored = load_run_env_spec(run_dir)
    assert (stored.random_return, stored.oracle_return) == (manifest.random_return, manifest.oracle_return)
    assert pd.read_csv(run_dir / "progress.csv")["normalised_score"].notna().all()
