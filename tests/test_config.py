"""The config layer: typed sections (one source of defaults), resolution, overrides."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from prefrl.agents import get_agent_class, list_agents
from prefrl.agents.base import COMMON_DEFAULTS
from prefrl.agents.rm_ppo import FeedbackConfig, RewardModelConfig
from prefrl.config import agent_config_path, load_agent_config, parse_overrides
from prefrl.errors import ConfigError, SpecError


@pytest.mark.parametrize("agent", list_agents())
def test_resolved_config_holds_every_section_key(agent):
    cls = get_agent_class(agent)
    config = load_agent_config(agent, "pendulum")
    for name, section in cls.config_sections.items():
        assert set(config[name]) == set(section.keys())
        # and what the agent builds from it is the same section
        assert section.from_mapping(config[name], name) == cls.parse_sections(config)[name]


@pytest.mark.parametrize("agent", list_agents())
def test_agent_yaml_keeps_only_tuned_values(agent):
    """A value equal to its section's (or the common) default is a second source of that default."""
    cls = get_agent_class(agent)
    data = yaml.safe_load(agent_config_path(agent).read_text())
    defaults = data.get("defaults") or {}
    repeated = [k for k, v in defaults.items() if k in COMMON_DEFAULTS and COMMON_DEFAULTS[k] == v]
    for name, section in cls.config_sections.items():
        default = section().to_dict()
        repeated += [f"{name}.{k}" for k, v in (defaults.get(name) or {}).items() if default[k] == v]
    assert repeated == []


def test_section_defaults_types_and_immutability():
    fb = FeedbackConfig.from_mapping({"candidate_factor": 4, "initial_query_share": 1}, "feedback")
    assert fb.candidate_factor == 4 and fb.schedule == "linear"
    assert isinstance(fb.initial_query_share, float)  # an int is accepted where a float is expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        fb.schedule = "linear"  # type: ignore[misc]
    rm = RewardModelConfig.from_mapping({"net_arch": [8, 8], "learning_rate": "3e-4"}, "reward_model")
    assert rm.net_arch == (8, 8) and rm.learning_rate == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as str
    assert rm.to_dict()["net_arch"] == [8, 8]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"scheduel": "linear"}, r"feedback: unknown key 'scheduel' \(did you mean 'schedule'\?\)"),
        ({"schedule": "linaer"}, r"feedback.schedule: unknown schedule 'linaer' \(did you mean 'linear'\?\)"),
        ({"candidate_factor": "ten"}, r"feedback.candidate_factor: expected int, got str"),
        ({"candidate_factor": 2.5}, r"feedback.candidate_factor: expected int, got float"),
        ({"relabel_rollout": 1}, r"feedback.relabel_rollout: expected bool, got int"),
        ({"initial_query_share": 1.5}, r"initial_query_share must lie in \[0, 1\]"),
        ({"segment_length": 0}, r"segment_length must be >= 1 or null"),
    ],
)
def test_bad_section_values_name_the_key(data, match):
    with pytest.raises(SpecError, match=match):
        FeedbackConfig.from_mapping(data, "feedback")


def test_bad_values_fail_when_the_config_is_loaded():
    with pytest.raises(SpecError, match=r"reward_model\.ensemble_size must be >= 1"):
        load_agent_config("rm_ppo", "pendulum", {"reward_model": {"ensemble_size": 0}})
    with pytest.raises(SpecError, match="unknown input mode 'pixels'"):
        load_agent_config("heron", "pendulum", {"reward_model": {"inputs": "pixels"}})
    with pytest.raises(SpecError, match="did you mean 'num_opponents'"):
        load_agent_config("spo", "pendulum", {"spo": {"num_oponents": 3}})


def test_heron_sections_carry_herons_defaults():
    config = load_agent_config("heron", "pendulum")
    assert config["feedback"]["schedule"] == "constant" and config["feedback"]["pool_rollouts"] == 1
    assert config["reward_model"]["inputs"] == "obs_factors" and config["reward_model"]["ensemble_size"] == 1
    assert config["reward_model"]["bootstrap"] is False  # the tuned value from agents/heron.yaml
    assert load_agent_config("rm_ppo", "pendulum")["feedback"]["schedule"] == "linear"


@pytest.mark.parametrize("env", ["pendulum", "halfcheetah"])
@pytest.mark.parametrize("agent", ["rm_ppo", "heron"])
def test_reward_model_ppo_agents_share_ppos_tuned_settings(agent, env):
    """rm_ppo and heron differ from ppo only in the reward: same PPO, network and (for both) query budget."""
    config, reference = load_agent_config(agent, env), load_agent_config("ppo", env)
    assert config["ppo"] == reference["ppo"] and config["policy_kwargs"] == reference["policy_kwargs"]
    assert config["normalize"] == reference["normalize"] and config["total_steps"] == reference["total_steps"]
    assert config["queries"] == load_agent_config("rm_ppo", env)["queries"]


def test_parse_overrides():
    assert parse_overrides(["ppo.learning_rate=3e-4", "n_envs=2", "feedback.schedule=linear"]) == {
        "ppo": {"learning_rate": 3e-4},
        "n_envs": 2,
        "feedback": {"schedule": "linear"},
    }
    assert parse_overrides(["reward_model.net_arch=[32, 32]"]) == {"reward_model": {"net_arch": [32, 32]}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["n_envs"])
