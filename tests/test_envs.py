"""Env specs: loading, validation errors, the reward-factor identity, fixed horizon, SB3 integration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3.common.vec_env import DummyVecEnv

from prefrl.envs import (
    DEFAULT_ENV,
    NON_MARKOVIAN_STATISTICS,
    EnvSpec,
    RewardFactorWrapper,
    list_env_specs,
    load_env_spec,
    make_env,
    make_vec_env,
)
from prefrl.errors import SpecError

ALL_ENVS = ["pendulum", "halfcheetah", "hopper", "walker2d", "ant", "swimmer", "reacher"]


def test_all_specs_listed():
    assert set(ALL_ENVS) <= set(list_env_specs())
    assert DEFAULT_ENV == "pendulum"
    assert EnvSpec.default().name == "pendulum"


@pytest.mark.parametrize("name", ALL_ENVS)
def test_spec_loads_and_is_consistent(name: str):
    spec = load_env_spec(name)
    assert spec.name == name and spec.path == Path(spec.path) and spec.path.stem == name
    assert 0 < spec.segment_length <= spec.horizon
    assert spec.factor_signs.shape == (spec.num_factors,)
    assert set(np.unique(spec.factor_signs)) <= {-1.0, 1.0}
    assert spec.in_reward_mask.any()
    # rater settings reference defined factors
    assert set(spec.heron_ranking) <= set(spec.factor_names)
    assert len(spec.heron_margins) == len(spec.heron_ranking) >= 2
    assert len(spec.criteria) >= 3
    for criterion in spec.criteria:
        assert set(criterion.weights) <= set(spec.factor_names)
    assert spec.non_markovian["statistic"] in NON_MARKOVIAN_STATISTICS
    assert spec.non_markovian["factor"] in spec.factor_names
    assert set(spec.oracle) == {"algo", "checkpoint"}
    assert spec.has_normalisation == (spec.random_return is not None and spec.oracle_return is not None)
    # gym id lookup (case-insensitive) finds the same spec
    assert load_env_spec(spec.gym_id.lower()) == spec
    assert load_env_spec(spec.path) == spec
    assert load_env_spec(spec) is spec


def test_fixed_horizon_kwargs():
    for name in ("hopper", "walker2d", "ant"):
        assert load_env_spec(name).kwargs["terminate_when_unhealthy"] is False
    assert load_env_spec("pendulum").horizon == 200
    assert load_env_spec("reacher").horizon == 50
    assert load_env_spec("halfcheetah").horizon == 1000


def test_factor_helpers():
    spec = load_env_spec("pendulum")
    assert spec.factor_names == ["angle_sq", "velocity_sq", "torque_sq"]
    np.testing.assert_allclose(spec.factor_weights, [1.0, 0.1, 0.001])
    assert spec.factor_index("torque_sq") == 2
    with pytest.raises(KeyError, match="did you mean 'torque_sq'"):
        spec.factor_index("torque_sqr")
    raw = np.array([[[1.0, 2.0, 3.0]]])
    np.testing.assert_allclose(spec.factor_utilities(raw), [[[-1.0, -0.2, -0.003]]])
    np.testing.assert_allclose(spec.reward_from_factors(raw), [[-1.203]])
    with pytest.raises(ValueError, match="3"):
        spec.factor_utilities(np.zeros((2, 4)))
    cheetah = load_env_spec("halfcheetah")
    # non-reward features get a zero reward weight
    assert cheetah.reward_weights[cheetah.factor_index("x_velocity")] == 0.0


@pytest.mark.parametrize("name", ALL_ENVS)
def test_reward_identity(name: str):
    """reward == sum over in-reward factors of sign * weight * raw, on random steps."""
    spec = load_env_spec(name)
    env = make_env(spec, seed=0)
    rng = np.random.default_rng(0)
    env.reset(seed=1)
    for _ in range(30):
        # actions beyond the bounds check that computed factors use the clipped action like the env
        action = rng.uniform(1.5 * env.action_space.low, 1.5 * env.action_space.high).astype(np.float32)
        _, reward, _, _, info = env.step(action)
        factors = info["factors"]
        assert factors.dtype == np.float64 and factors.shape == (spec.num_factors,)
        expected = sum(
            f.sign * f.weight * x for f, x in zip(spec.factors, factors, strict=True) if f.in_reward
        )
        # exact up to float rounding (gymnasium computes some terms in float32)
        assert reward == pytest.approx(expected, rel=1e-7, abs=1e-8)
        assert spec.reward_from_factors(factors) == pytest.approx(reward, rel=1e-7, abs=1e-8)
    env.close()


def test_pendulum_factors_use_pre_step_state():
    env = make_env("pendulum", seed=0)
    env.reset(seed=3)
    theta, thetadot = env.unwrapped.state
    _, _, _, _, info = env.step(np.array([5.0], dtype=np.float32))  # clipped to max torque 2
    wrapped_theta = ((theta + np.pi) % (2 * np.pi)) - np.pi
    np.testing.assert_allclose(info["factors"], [wrapped_theta**2, thetadot**2, 4.0])


def test_hopper_fixed_horizon_random_actions():
    """Without termination, a falling hopper still runs exactly `horizon` steps."""
    spec = load_env_spec("hopper")
    env = make_env(spec, seed=0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, unhealthy = 0, 0
    while True:
        _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, size=3))
        steps += 1
        unhealthy += info["reward_survive"] == 0
        if terminated or truncated:
            break
    assert steps == spec.horizon == 1000
    assert not terminated and truncated
    assert unhealthy > 0  # it did fall, and was not terminated


def test_make_env_seed_is_deterministic():
    def rollout() -> np.ndarray:
        env = make_env("pendulum", seed=7)
        obs, _ = env.reset()
        out = [obs]
        for _ in range(5):
            obs, *_ = env.step(env.action_space.sample())
            out.append(obs)
        return np.array(out)

    np.testing.assert_array_equal(rollout(), rollout())


def test_make_vec_env_factors_and_seeds():
    venv = make_vec_env("pendulum", n_envs=3, seed=10)
    assert isinstance(venv, DummyVecEnv) and venv.num_envs == 3
    obs = venv.reset()
    # env i is seeded seed + i
    for i in range(3):
        single = make_env("pendulum")
        ref, _ = single.reset(seed=10 + i)
        np.testing.assert_allclose(obs[i], ref)
    for _ in range(3):
        obs, rewards, _, infos = venv.step(np.zeros((3, 1), dtype=np.float32))
        spec = load_env_spec("pendulum")
        factors = np.stack([info["factors"] for info in infos])
        assert factors.shape == (3, 3)
        np.testing.assert_allclose(spec.reward_from_factors(factors), rewards, rtol=1e-5)
    assert venv.env_is_wrapped(RewardFactorWrapper) == [True] * 3
    venv.close()


def test_make_vec_env_wrapper_and_bad_n_envs():
    import gymnasium as gym

    venv = make_vec_env("pendulum", n_envs=1, seed=0, wrapper=gym.wrappers.ClipAction)
    assert venv.env_is_wrapped(gym.wrappers.ClipAction) == [True]
    with pytest.raises(ValueError, match="n_envs"):
        make_vec_env("pendulum", n_envs=0)


def test_episodes_exactly_horizon_in_vec_env():
    spec = load_env_spec("reacher")
    venv = make_vec_env(spec, n_envs=2, seed=0)
    venv.reset()
    done_steps = []
    for t in range(1, 2 * spec.horizon + 1):
        _, _, dones, infos = venv.step(np.zeros((2, 2)))
        if dones.any():
            assert dones.all()
            assert infos[0]["terminal_observation"].shape == venv.observation_space.shape
            done_steps.append(t)
    assert done_steps == [spec.horizon, 2 * spec.horizon]


def test_normalise():
    spec = dataclasses.replace(load_env_spec("pendulum"), random_return=None, oracle_return=None)
    assert not spec.has_normalisation
    with pytest.raises(ValueError, match="random_return"):
        spec.normalise(np.array([1.0]))
    anchored = dataclasses.replace(spec, random_return=-1200.0, oracle_return=-200.0)
    assert anchored.has_normalisation
    np.testing.assert_allclose(anchored.normalise(np.array([-1200.0, -200.0, -700.0])), [0.0, 100.0, 50.0])


def test_spaces_cached():
    spec = load_env_spec("halfcheetah")
    assert spec.observation_space.shape == (17,)
    assert spec.action_space.shape == (6,)
    assert spec.observation_space is spec.observation_space


# ------------------------------------------------------------------------------------------------
# Validation errors: each names the file and the key
# ------------------------------------------------------------------------------------------------


def _base_spec() -> dict:
    with open(load_env_spec("pendulum").path) as f:
        return yaml.safe_load(f)


def _write(tmp_path: Path, data: dict, name: str = "bad") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(data: dict, dotted: str, value):
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "value", "pattern"),
    [
        ("gym_id", _DELETE, "missing required key 'gym_id'"),
        ("horizn", 200, "unknown key 'horizn' \\(did you mean 'horizon'\\?\\)"),
        ("horizon", "long", "horizon: expected int"),
        ("horizon", 0, "horizon: must be a positive integer"),
        ("segment_length", -5, "segment_length: must be a positive integer"),
        ("segment_length", 500, "segment_length .* exceeds the horizon"),
        ("factors", "angle", "factors: expected list"),
        ("factors.0.sign", 2, "factors\\[0\\].sign: must be \\+1 or -1"),
        ("factors.0.sgn", 1, "factors\\[0\\]: unknown key 'sgn' \\(did you mean 'sign'\\?\\)"),
        ("factors.0.source", _DELETE, "factors\\[0\\]: missing required key 'source'"),
        ("factors.0.source", "reward_forward", "factors\\[0\\].source: expected 'info:<key>'"),
        ("factors.0.source", "computed:nope", "unknown computed factor 'nope'"),
        ("factors.0.weight", -1.0, "factors\\[0\\].weight: must be >= 0"),
        ("factors.0.in_reward", "yes", "factors\\[0\\].in_reward: expected bool"),
        ("factors.1.name", "angle_sq", "duplicate factor names"),
        ("heron.ranking", ["angle_sq", "speed"], "heron.ranking\\[1\\]: unknown factor 'speed'"),
        ("heron.margins", [0.1], "heron.margins: needs one margin per ranking level \\(3\\), got 1"),
        ("intransitive.criteria.0.weights", {"angel_sq": 1.0}, "unknown factor 'angel_sq'.*did you mean"),
        ("intransitive.criteria", [{"name": "a", "weights": {"angle_sq": 1.0}}], "at least 3 criteria"),
        ("non_markovian.statistic", "median", "non_markovian.statistic: unknown statistic 'median'"),
        ("non_markovian.factor", "height", "non_markovian.factor: unknown factor 'height'"),
        ("non_markovian.threshold", _DELETE, "missing required key 'threshold'"),
        ("normalisation.random_retrun", 1.0, "unknown key 'random_retrun' \\(did you mean 'random_return'"),
        ("normalisation.oracle_return", "high", "normalisation.oracle_return: expected float"),
        ("oracle.checkpoint", 3, "oracle.checkpoint: expected str"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path: Path, edit: str, value, pattern: str):
    data = _base_spec()
    _set(data, edit, value)
    path = _write(tmp_path, data)
    with pytest.raises(SpecError, match=pattern) as excinfo:
        load_env_spec(path)
    assert str(path) in str(excinfo.value)


def test_unknown_env_name_lists_available():
    with pytest.raises(SpecError, match="did you mean 'halfcheetah'") as excinfo:
        load_env_spec("halfcheeta")
    assert "pendulum" in str(excinfo.value) and "available" in str(excinfo.value)
    with pytest.raises(SpecError, match="file not found"):
        load_env_spec("/nonexistent/dir/x.yaml")


def test_minimal_spec_defaults(tmp_path: Path):
    data = {
        "gym_id": "Pendulum-v1",
        "horizon": 30,
        "factors": [{"name": "angle_sq", "sign": -1, "source": "computed:pendulum_angle_sq"}],
    }
    spec = load_env_spec(_write(tmp_path, data, "mini"))
    assert spec.name == "mini" and spec.kwargs == {} and spec.segment_length == 30
    assert spec.factors[0].weight == 1.0 and spec.factors[0].in_reward
    assert spec.criteria == () and spec.heron_ranking == () and spec.non_markovian == {}
    env = make_env(spec, seed=0)
    env.reset()
    _, _, _, _, info = env.step(np.zeros(1, dtype=np.float32))
    assert info["factors"].shape == (1,)


def test_missing_info_key_is_a_clear_error(tmp_path: Path):
    data = {
        "gym_id": "Pendulum-v1",
        "horizon": 10,
        "factors": [{"name": "speed", "sign": 1, "source": "info:speed"}],
    }
    env = make_env(load_env_spec(_write(tmp_path, data, "noinfo")), seed=0)
    env.reset()
    with pytest.raises(KeyError, match="info\\['speed'\\]"):
        env.step(np.zeros(1, dtype=np.float32))


def test_no_in_reward_factor_rejected(tmp_path: Path):
    data = {
        "gym_id": "Pendulum-v1",
        "horizon": 10,
        "factors": [{"name": "a", "sign": -1, "source": "computed:pendulum_angle_sq", "in_reward": False}],
    }
    with pytest.raises(SpecError, match="in_reward"):
        load_env_spec(_write(tmp_path, data))
