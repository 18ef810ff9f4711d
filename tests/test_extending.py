"""Bring your own rater and agent: register_rater / register_agent, entry points, Rater objects in runs."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml

import prefrl.agents.registry as agent_registry
import prefrl.raters.registry as rater_registry
from prefrl.agents import Agent, get_agent_class, register_agent
from prefrl.config import load_agent_config
from prefrl.errors import RaterError
from prefrl.experiment import run_experiment
from prefrl.raters import PartialReturnRater, ScoreRater, list_raters, make_rater, register_rater
from prefrl.segments import collect_segments
from prefrl.sweep import run_sweep


class LazyRater(ScoreRater):
    """Prefers the segment with less torque (ignores everything else)."""

    name = "lazy"

    def __init__(self, scale: float = 1.0, beta: float = float("inf"), env_spec=None) -> None:
        super().__init__(beta=beta)
        self.scale = scale
        self.index = env_spec.factor_index("torque_sq")

    def score(self, segments, step_weights=None):
        return -self.scale * segments.factors[..., self.index].sum(axis=1)

    def __repr__(self) -> str:
        return f"LazyRater(scale={self.scale})"


class StandStill(Agent):
    """Always acts zero; 'learning' only reports progress (a minimal agent)."""

    name = "stand_still"

    def learn(self, total_steps, query_budget, callback=None):
        self.total_steps, self.query_budget = total_steps, query_budget
        if callback is not None:
            callback.maybe_eval(0, self)
            callback.on_end(total_steps, self)

    def predict(self, obs, deterministic=True):
        return np.zeros((len(obs), *self.env_spec.action_space.shape), dtype=np.float32)

    def save(self, path):
        Path(path).write_text(json.dumps({"action": 0.0}))

    @classmethod
    def load_policy(cls, run_dir):
        return lambda obs: np.zeros((len(obs), 1), dtype=np.float32)


@pytest.fixture
def registries(monkeypatch):
    """Registries restored after the test (registrations would leak into other tests)."""
    agent_registry.list_agents(), rater_registry.list_raters()  # built-ins in before the copies are taken
    monkeypatch.setattr(rater_registry, "_ENTRIES", dict(rater_registry._ENTRIES))
    monkeypatch.setattr(agent_registry, "_REGISTRY", dict(agent_registry._REGISTRY))


def test_register_rater_infers_spec_parameters(registries, pendulum, random_pairs):
    register_rater("lazy", LazyRater)
    assert "Prefers the segment with less torque" in list_raters()["lazy"]
    assert "scale=1.0" in list_raters()["lazy"]
    rater = make_rater("lazy:scale=2+mistake:eps=0.0", pendulum)
    assert rater.inner.scale == 2.0
    with pytest.raises(RaterError, match=r"unknown parameter 'scal'.*did you mean 'scale'"):
        make_rater("lazy:scal=2", pendulum)
    with pytest.raises(RaterError, match="must be a number"):
        make_rater("lazy:scale=big", pendulum)


def test_register_rater_labels_like_its_score(registries, pendulum):
    register_rater("lazy", LazyRater)
    segments = collect_segments(pendulum, "random", 40, seed=0)
    pairs = np.stack([np.arange(0, 40, 2), np.arange(1, 40, 2)], axis=1)
    prefs = make_rater("lazy", pendulum).label(segments, pairs, np.random.default_rng(0))
    torque = segments.factors[..., 2].sum(axis=1)
    expected = (torque[pairs[:, 0]] < torque[pairs[:, 1]]).astype(float)
    np.testing.assert_array_equal(prefs.labels, expected)


@pytest.mark.parametrize(
    ("name", "factory", "kwargs", "match"),
    [
        ("partial_return", LazyRater, {}, "already registered"),
        ("not a name", LazyRater, {}, "identifier"),
        ("lazy2", LazyRater, {"params": {"scale": list}}, "float, int, bool or str"),
        ("lazy3", 42, {}, "Rater class or a callable"),
    ],
)
def test_register_rater_rejects(registries, name, factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        register_rater(name, factory, **kwargs)


def test_rater_and_agent_entry_points(registries, monkeypatch):
    entries = {
        "prefrl.raters": [metadata.EntryPoint("lazy_plugin", f"{__name__}:LazyRater", "prefrl.raters")],
        "prefrl.agents": [
            metadata.EntryPoint("stand_still", f"{__name__}:StandStill", "prefrl.agents"),
            metadata.EntryPoint("broken", "no_such_module_xyz:Agent", "prefrl.agents"),
        ],
    }
    fake = lambda group: entries.get(group, [])  # noqa: E731
    monkeypatch.setattr(rater_registry.metadata, "entry_points", fake)
    monkeypatch.setattr(rater_registry, "_plugins_loaded", False)
    monkeypatch.setattr(agent_registry, "_builtins_loaded", False)
    assert "lazy_plugin" in list_raters()
    with pytest.warns(UserWarning, match="agent plugin 'broken'.*not loaded"):
        assert get_agent_class("stand_still") is StandStill
    assert get_agent_class("ppo").name == "ppo"  # a broken plugin does not take the built-ins down


def test_rater_object_in_run_and_sweep(registries, tmp_path, tiny_ppo):
    overrides = {**tiny_ppo, "reward_model": {"net_arch": [16], "initial_epochs": 2, "epochs": 1}}
    rater = PartialReturnRater(beta=1.0)
    run_dir = run_experiment("pendulum", "rm_ppo", rater, 0, steps=256, queries=16, out=tmp_path / "run",
                             overrides=overrides, eval_freq=256, n_eval_episodes=1)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["rater"] == repr(rater)
    assert rater.num_queries > 0  # the object itself answered the queries
    result = run_sweep("pendulum", "rm_ppo", [rater, "partial_return"], 1, steps=256, queries=16,
                       out=tmp_path / "sweep", jobs=1, overrides=overrides, eval_freq=256, n_eval_episodes=1)
    assert not result.failed and len(result.cells) == 2
    assert {c.rater for c in result.cells} == {repr(rater), "partial_return"}


def test_agent_without_yaml_runs_on_defaults(registries, tmp_path):
    register_agent(StandStill)
    config = load_agent_config("stand_still", "pendulum")
    assert config["total_steps"] > 0
    run_dir = run_experiment("pendulum", "stand_still", None, 0, steps=100, out=tmp_path / "run")
    assert (run_dir / "done").is_file() and (run_dir / "progress.csv").is_file()
