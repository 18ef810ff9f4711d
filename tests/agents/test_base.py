"""Agent registry, PPOAgent hooks, what the SB3 templates share, and agent config loading (agents/*.yaml)."""

from __future__ import annotations

import inspect
from typing import ClassVar

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

from prefrl.agents import Agent, PPOAgent, get_agent_class, list_agents, make_agent, register_agent
from prefrl.agents.base import COMMON_DEFAULTS, Schema
from prefrl.agents.off_policy import SAC_KEYS
from prefrl.agents.on_policy import PPO_KEYS, parse_schedule
from prefrl.agents.sb3_agent import sb3_config_keys
from prefrl.config import load_agent_config
from prefrl.envs import list_env_specs, load_env_spec
from prefrl.errors import SpecError
from prefrl.networks import sb3_policy_kwargs as build_policy_kwargs
from prefrl.raters import make_rater

TINY = {
    "n_envs": 2,
    "policy_kwargs": {"net_arch": [16]},
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
}


def tiny_config(**extra):
    return load_agent_config("ppo", "pendulum", {**TINY, **extra})


# ---- registry -----------------------------------------------------------------------------------
def test_registry_lists_ppo():
    assert "ppo" in list_agents()
    assert get_agent_class("ppo").name == "ppo"
    assert issubclass(get_agent_class("ppo"), PPOAgent)


@pytest.mark.parametrize("name, hint", [("ppp", "ppo"), ("PPO", "ppo"), ("xyz", None)])
def test_unknown_agent_error(pendulum, name, hint):
    with pytest.raises(SpecError, match=f"unknown agent '{name}'") as info:
        make_agent(name, pendulum, {})
    if hint:
        assert f"did you mean '{hint}'" in str(info.value)
    assert "available: " in str(info.value)


def test_register_rejects_non_agents_and_name_clashes():
    with pytest.raises(TypeError):
        register_agent(int)  # type: ignore[arg-type]

    class Clash(PPOAgent):
        name = "ppo"

    with pytest.raises(ValueError, match="already registered"):
        register_agent(Clash)
    assert get_agent_class("ppo") is not Clash


def test_agent_requiring_rater_refuses_none(pendulum):
    class NeedsRater(PPOAgent):
        name = "_needs_rater"
        requires_rater = True

    with pytest.raises(ValueError, match="needs a rater"):
        NeedsRater(pendulum, tiny_config(), rater=None)


# ---- schema and config helpers ---------------------------------------------------------------------
def test_schema_merges_common_ppo_and_subclass_keys():
    class WithExtra(PPOAgent):
        name = "_with_extra"
        config_keys: ClassVar[Schema] = {"reward_model": ("lr", "ensemble")}

    schema = WithExtra.config_schema()
    assert set(COMMON_DEFAULTS) <= set(schema)
    assert schema["ppo"] == PPO_KEYS and schema["reward_model"] == ("lr", "ensemble")
    # run-owned PPO arguments are not settable from a config
    assert "learning_rate" in PPO_KEYS and "seed" not in PPO_KEYS and "env" not in PPO_KEYS


@pytest.mark.parametrize(
    "value, progress, expected",
    [(3e-4, 0.3, 3e-4), ("3e-4", 0.3, 3e-4), ("lin_1e-3", 1.0, 1e-3), ("lin_1e-3", 0.25, 2.5e-4),
     ("lin_1e-3_5e-5", 0.0, 5e-5), ("lin_1e-3_5e-5", 1.0, 1e-3)],
)  # fmt: skip
def test_parse_schedule(value, progress, expected):
    schedule = parse_schedule(value, "ppo.learning_rate")
    got = schedule(progress) if callable(schedule) else schedule
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["linear_1e-3", "lin_x", "lin_1_2_3", "fast"])
def test_parse_schedule_rejects(bad):
    with pytest.raises(SpecError, match=r"ppo\.learning_rate"):
        parse_schedule(bad, "ppo.learning_rate")


def test_activation_by_name():
    assert build_policy_kwargs({"activation_fn": "ReLU"})["activation_fn"] is torch.nn.ReLU
    with pytest.raises(SpecError, match="did you mean 'tanh'"):
        build_policy_kwargs({"activation_fn": "tahn"})


# ---- config loading -------------------------------------------------------------------------------
AGENT_YAML = """
defaults:
  n_envs: 2
  eval_freq: 500
  ppo: {learning_rate: 1.0e-3, n_steps: 128, gamma: 0.99}
envs:
  pendulum:
    n_envs: 3
    ppo: {gamma: 0.9}
"""


@pytest.fixture
def agent_yaml(tmp_path):
    path = tmp_path / "ppo.yaml"
    path.write_text(AGENT_YAML)
    return path


@pytest.mark.parametrize(
    "env, overrides, n_envs, gamma",
    [("halfcheetah", None, 2, 0.99), ("pendulum", None, 3, 0.9), ("pendulum", {"n_envs": 5}, 5, 0.9),
     ("pendulum", {"ppo": {"gamma": 0.5}}, 3, 0.5)],
)  # fmt: skip
def test_config_merge_order(agent_yaml, env, overrides, n_envs, gamma):
    config = load_agent_config("ppo", env, overrides, path=agent_yaml)
    assert config["n_envs"] == n_envs
    assert config["ppo"]["gamma"] == gamma
    # nested sections merge key by key: the defaults' siblings survive an env or user override
    assert config["ppo"]["learning_rate"] == 1e-3 and config["ppo"]["n_steps"] == 128
    assert config["eval_freq"] == 500  # from defaults
    assert config["n_eval_episodes"] == COMMON_DEFAULTS["n_eval_episodes"]  # from the common defaults


@pytest.mark.parametrize(
    "old, new, key, hint",
    [("gamma: 0.9", "gama: 0.9", "gama", "gamma"), ("n_envs: 3", "n_env: 3", "n_env", "n_envs"),
     ("learning_rate: 1.0e-3", "learnin_rate: 1.0e-3", "learnin_rate", "learning_rate")],
)  # fmt: skip
def test_misspelled_key_names_file_and_key(agent_yaml, old, new, key, hint):
    agent_yaml.write_text(AGENT_YAML.replace(old, new))
    with pytest.raises(SpecError) as info:
        load_agent_config("ppo", "pendulum", path=agent_yaml)
    message = str(info.value)
    assert str(agent_yaml) in message and f"'{key}'" in message and f"did you mean '{hint}'" in message


def test_misspelled_override_is_rejected(agent_yaml):
    with pytest.raises(SpecError, match="did you mean 'n_epochs'"):
        load_agent_config("ppo", "pendulum", {"ppo": {"n_epoch": 3}}, path=agent_yaml)
    with pytest.raises(SpecError, match="unknown key 'net_arch'"):
        load_agent_config("ppo", "pendulum", {"net_arch": [8]}, path=agent_yaml)


def test_unknown_env_section_warns(agent_yaml):
    agent_yaml.write_text(AGENT_YAML.replace("  pendulum:", "  pendulm:"))
    with pytest.warns(UserWarning, match="did you mean 'pendulum'"):
        config = load_agent_config("ppo", "pendulum", path=agent_yaml)
    assert config["n_envs"] == 2


@pytest.mark.parametrize("env", list_env_specs())
def test_shipped_ppo_config_builds_for_every_env(env):
    spec = load_env_spec(env)
    config = load_agent_config("ppo", env)
    agent = make_agent("ppo", spec, config, seed=0)
    try:
        obs = agent.venv.reset()
        action = agent.predict(obs)
        assert action.shape == (config["n_envs"], *spec.action_space.shape)
        assert agent.model.n_steps == config["ppo"]["n_steps"]
        assert isinstance(agent.venv, VecNormalize) == bool(config.get("normalize"))
    finally:
        agent.close()


# ---- PPOAgent hooks -------------------------------------------------------------------------------
class ZeroReward(VecEnvWrapper):
    """Replaces the reward by 0 (stands in for a learned reward)."""

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return obs, np.zeros_like(rewards), dones, infos


class CountingBuffer(RolloutBuffer):
    calls = 0

    def compute_returns_and_advantage(self, last_values, dones):
        type(self).calls += 1
        super().compute_returns_and_advantage(last_values, dones)


class RolloutEnds(BaseCallback):
    def __init__(self):
        super().__init__()
        self.count = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.count += 1


class HookedPPO(PPOAgent):
    name = "_hooked"

    def wrap_env(self, venv: VecEnv) -> VecEnv:
        return ZeroReward(venv)

    def rollout_buffer_class(self):
        return CountingBuffer

    def extra_callbacks(self):
        self.rollout_ends = RolloutEnds()
        return [self.rollout_ends]


def test_ppo_agent_hooks_are_used(pendulum):
    CountingBuffer.calls = 0
    agent = HookedPPO(pendulum, tiny_config(), seed=0)
    agent.learn(256, 0)
    assert isinstance(agent.venv, ZeroReward)
    assert isinstance(agent.model.rollout_buffer, CountingBuffer)
    # 256 steps / (2 envs * 64 steps) = 2 rollouts, each followed by advantages and a rollout end
    assert CountingBuffer.calls == 2 and agent.rollout_ends.count == 2
    assert np.all(agent.model.rollout_buffer.rewards == 0.0)
    assert agent.total_steps == 256 and agent.query_budget == 0 and agent.num_queries == 0
    agent.close()


def test_normalize_uses_training_statistics(pendulum, tmp_path):
    agent = make_agent("ppo", pendulum, tiny_config(normalize=True), seed=0)
    agent.learn(256, 0)
    assert isinstance(agent.venv, VecNormalize)
    obs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 8.0]], dtype=np.float32)
    expected, _ = agent.model.predict(agent.venv.normalize_obs(obs), deterministic=True)
    np.testing.assert_array_equal(agent.predict(obs), expected)
    agent.save(tmp_path / "policy.zip")
    assert (tmp_path / "policy.zip").is_file() and (tmp_path / "vecnormalize.json").is_file()
    assert (tmp_path / "policy.pt").is_file() and not (tmp_path / "vecnormalize.pkl").exists()
    agent.close()


# ---- SB3Agent: what the PPO and SAC templates share ------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "keys", "reserved"),
    [
        (PPO, PPO_KEYS, ("rollout_buffer_class", "rollout_buffer_kwargs")),
        (SAC, SAC_KEYS, ("replay_buffer_class", "replay_buffer_kwargs", "action_noise")),
    ],
)
def test_config_keys_leave_out_what_the_template_sets(algorithm, keys, reserved):
    parameters = list(inspect.signature(algorithm.__init__).parameters)
    assert list(keys) == [p for p in parameters if p in keys]  # the signature's order
    assert {"learning_rate", "gamma", "batch_size"} <= set(keys)
    assert not {"self", "policy", "env", "seed", "device", "verbose", "policy_kwargs", *reserved} & set(keys)
    assert sb3_config_keys(algorithm, reserved) == keys


@pytest.mark.parametrize(
    ("agent", "rater", "normalize", "norm_reward", "gamma"),
    [
        ("ppo", None, True, True, "ppo"),  # returns normalised with PPO's discount
        ("ppo", None, {"gamma": 0.5, "norm_obs": False}, True, 0.5),
        ("rm_ppo", "partial_return", True, False, "ppo"),  # the reward wrapper normalises the reward
        ("sac", None, True, False, 0.99),  # SAC normalises observations only
    ],
)
def test_normaliser_settings_per_template(pendulum, agent, rater, normalize, norm_reward, gamma):
    overrides = {"n_envs": 2, "normalize": normalize, "sac": {"buffer_size": 500}} if agent == "sac" else {
        **TINY, "normalize": normalize,
    }  # fmt: skip
    config = load_agent_config(agent, "pendulum", overrides)
    built = make_agent(agent, pendulum, config, rater=rater and make_rater(rater, pendulum), seed=0)
    try:
        assert isinstance(built.venv, VecNormalize)
        assert built.venv.norm_reward is norm_reward
        assert built.venv.norm_obs is (normalize is True or normalize.get("norm_obs", True))
        expected = config["ppo"].get("gamma", 0.99) if gamma == "ppo" else gamma
        assert built.venv.gamma == pytest.approx(expected)
    finally:
        built.close()


def test_agent_is_abstract(pendulum):
    with pytest.raises(TypeError):
        Agent(pendulum, {})  # type: ignore[abstract]
