"""Oracle experts: loading, value-function quality, skill levels and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from prefrl.envs import load_env_spec
from prefrl.errors import OracleError, TrainingStateError
from prefrl.evaluation import evaluate_policy
from prefrl.oracle import load_oracle, oracle_dir
from prefrl.oracle.quality import value_quality, value_quality_with_critic
from prefrl.oracle.training import _pick_levels, load_oracle_config

#: a value correction small enough for training tests (the real settings are in agents/oracle.yaml)
TINY_CORRECTION = {"episodes": 2, "validation_episodes": 1, "steps": 20}


@pytest.fixture(scope="module")
def pendulum_oracle():
    return load_oracle("pendulum")


def test_shipped_pendulum_oracle_is_an_expert(pendulum_oracle):
    mean, _ = evaluate_policy(pendulum_oracle.policy("expert"), pendulum_oracle.spec, n_episodes=5, seed=7)
    assert mean >= -250.0  # target -200 on 20 episodes; 5 episodes are noisier
    spec = load_env_spec("pendulum")
    assert spec.has_normalisation
    assert spec.oracle_return > spec.random_return


def test_skill_levels_span_random_to_expert(pendulum_oracle):
    manifest = pendulum_oracle.manifest
    assert len(manifest.levels) >= 4
    returns = [level.mean_return for level in manifest.levels]
    assert returns == sorted(returns)
    assert returns[0] < manifest.random_return + 0.5 * (manifest.oracle_return - manifest.random_return)
    assert returns[-1] > returns[0] + 200.0


def test_value_function_is_meaningful(pendulum_oracle):
    import torch as th

    th.manual_seed(7)
    expected_draw = th.rand(3)
    th.manual_seed(7)
    quality = value_quality(pendulum_oracle, episodes=5)
    assert th.equal(th.rand(3), expected_draw)  # its seeded action noise leaves the caller's stream alone
    # the check: V* ranks held-out expert states like their Monte-Carlo returns
    assert quality["spearman"] >= 0.8
    assert quality["pearson"] >= 0.9
    assert quality["spearman_transient"] >= 0.8
    assert quality["spearman_mixed"] >= 0.8  # also where a weaker policy handed over to the expert
    assert quality["pearson_stochastic"] >= 0.9  # also on the stochastic policy's own rollouts
    # the shipped Monte-Carlo correction is what gets there: the plain critic ranks the equilibrium
    # states (60% of them, returns within 1e-4 of each other) no better than chance
    assert pendulum_oracle.correction is not None
    plain = value_quality(pendulum_oracle, episodes=5, corrected=False)
    assert plain["spearman"] < 0.8 <= quality["spearman"]
    # both from one set of rollouts: the same figures as two separate checks
    assert value_quality_with_critic(pendulum_oracle, episodes=5) == (quality, plain)


def test_value_and_q_shapes_and_consistency(pendulum_oracle):
    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi, np.pi, 64)
    obs = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, 64)], axis=1)
    v = pendulum_oracle.value(obs)
    assert v.shape == (64,)
    np.testing.assert_allclose(v, pendulum_oracle.value(obs))  # deterministic
    q_expert = pendulum_oracle.q_value(obs, pendulum_oracle.policy("expert")(obs))
    q_bad = pendulum_oracle.q_value(obs, -pendulum_oracle.policy("expert")(obs))
    assert q_expert.shape == (64,)
    # the expert's own action is better than its mirror image on most states
    assert np.mean(q_expert > q_bad) > 0.7
    # upright and still is worth more than hanging down
    up, down = np.array([[1.0, 0.0, 0.0]]), np.array([[-1.0, 0.0, 0.0]])
    assert pendulum_oracle.value(up)[0] > pendulum_oracle.value(down)[0]


def test_sac_value_is_a_function_of_the_state_alone(pendulum_oracle):
    """The same action draws for every state: a state's V* does not depend on the batch around it.

    (With draws per batch row, V of these states computed alone and in one batch differed by up to 0.36.)
    """
    rng = np.random.default_rng(1)
    theta = rng.uniform(-np.pi, np.pi, 40)
    obs = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, 40)], axis=1)
    batch = pendulum_oracle.value(obs, corrected=False)
    alone = np.array([pendulum_oracle.value(o[None], corrected=False)[0] for o in obs])
    np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-5)
    repeated = pendulum_oracle.value(np.repeat(obs[:1], 30, axis=0), corrected=False)
    assert np.ptp(repeated) < 1e-5 * max(1.0, abs(repeated[0]))


def test_missing_and_corrupted_checkpoints_say_how_to_train(tmp_path):
    spec = load_env_spec("pendulum")
    with pytest.raises(OracleError, match="prefrl oracle train --env pendulum"):
        load_oracle(spec, directory=tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(oracle_dir(spec), broken)
    (broken / "expert.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(OracleError, match=r"damaged: expert.pt differs.*prefrl oracle train --env pendulum"):
        load_oracle(spec, directory=broken)
    bad_manifest = tmp_path / "bad_manifest"
    shutil.copytree(oracle_dir(spec), bad_manifest)
    (bad_manifest / "manifest.json").write_text("{not json")
    with pytest.raises(OracleError, match=r"manifest.*corrupted"):
        load_oracle(spec, directory=bad_manifest)


def test_env_without_oracle_gives_clear_error(tmp_path, monkeypatch):
    import prefrl.oracle.loading as oracle_module

    monkeypatch.setattr(oracle_module, "CHECKPOINT_ROOT", tmp_path)  # no env has a checkpoint here
    with pytest.raises(OracleError, match=r"no oracle for env 'walker2d'.*oracle train --env walker2d"):
        load_oracle("walker2d")


def test_pick_levels_spreads_over_skill():
    returns = list(np.linspace(-1200, -120, 40))
    chosen = _pick_levels(returns, r_random=-1200, r_expert=-120, n_levels=5)
    picked = [returns[i] for i in chosen]
    assert len(chosen) == 5
    assert picked == sorted(picked)
    assert picked[0] < -900 and picked[-1] > -300


def test_oracle_config_validation():
    config = load_oracle_config("pendulum")
    assert config["algo"] == "sac" and config["total_steps"] == 20000
    assert json.dumps(config)  # plain data


def test_ppo_oracle_round_trip_keeps_normalisation(tmp_path):
    """A (tiny) PPO expert with VecNormalize: the saved checkpoint acts like the trained model."""
    import torch as th

    from prefrl.oracle.loading import NORM_PREFIX
    from prefrl.oracle.training import train_oracle

    out = train_oracle("reacher", steps=1024, seed=0, out=tmp_path / "reacher",
                       eval_episodes=2, verbose=False, value_correction=TINY_CORRECTION)  # fmt: skip
    state = th.load(out / "expert.pt", weights_only=True)
    assert {NORM_PREFIX + "obs_mean", NORM_PREFIX + "obs_var", NORM_PREFIX + "reward_scale"} <= set(state)
    oracle = load_oracle("reacher", directory=out)
    assert oracle.manifest.algo == "ppo" and len(oracle.manifest.levels) >= 1
    obs = np.random.default_rng(0).standard_normal((16, 10))
    assert oracle.value(obs).shape == (16,)
    assert oracle.policy("expert")(obs).shape == (16, 2)
    with pytest.raises(OracleError, match="no Q function"):
        oracle.q_value(obs, np.zeros((16, 2)))
    # the recorded expert return is reproduced by the loaded checkpoint (same normalisation)
    mean, _ = evaluate_policy(oracle.policy("expert"), oracle.spec, n_episodes=2, seed=10_000)
    assert mean == pytest.approx(oracle.manifest.oracle_return, abs=1.0)


@pytest.mark.parametrize(
    ("stop", "expect_steps"),
    [({"stop_return": -1e9}, 400), ({"max_minutes": 0.0}, 1), ({"interrupt_at": 330}, 330), ({}, 1200)],
    ids=["stop_return", "max_minutes", "ctrl_c", "full_budget"],
)
def test_sac_oracle_stops_early(tmp_path, monkeypatch, stop, expect_steps):
    """``stop_return`` ends a SAC run at the first evaluation above it, ``max_minutes`` at the deadline
    and Ctrl-C where it is pressed; each still saves a usable oracle."""
    import prefrl.oracle.training as oracle_module

    monkeypatch.setattr(oracle_module, "STOP_EVAL_FREQ", 400)
    stop = dict(stop)
    if "interrupt_at" in stop:
        interrupt_at = stop.pop("interrupt_at")
        record = oracle_module._SnapshotCallback._on_step

        def on_step(self):
            if self.num_timesteps == interrupt_at:
                raise KeyboardInterrupt
            return record(self)

        monkeypatch.setattr(oracle_module._SnapshotCallback, "_on_step", on_step)
    out = oracle_module.train_oracle(
        "pendulum", steps=1200, out=tmp_path / "pendulum", eval_episodes=2, verbose=False,
        state_dir=tmp_path / "state", value_correction=TINY_CORRECTION, **stop,
    )  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train_steps"] == expect_steps
    level_returns = [level["mean_return"] for level in manifest["levels"]]
    assert level_returns == sorted(level_returns)
    for key, flag in (("stop_return", "--stop-return"), ("max_minutes", "--max-minutes")):
        assert (flag in manifest["command"]) == (key in stop)
    assert load_oracle("pendulum", directory=out).value(np.zeros((3, 3))).shape == (3,)
    # the value correction ran with the given settings and recorded its verdict
    assert manifest["value_correction"]["settings"]["episodes"] == 2
    assert (out / "value_correction.pt").is_file() == manifest["value_correction"]["accepted"]


def test_early_stop_is_sac_only(tmp_path):
    from prefrl.oracle.training import train_oracle

    with pytest.raises(OracleError, match="SAC oracles only"):
        train_oracle("reacher", steps=64, algo="ppo", out=tmp_path, stop_return=0.0)


@pytest.mark.slow  # ~8 s: an interrupted SAC oracle training, resumed, then restarted
def test_interrupted_sac_oracle_resumes(tmp_path, monkeypatch):
    """A run cut by Ctrl-C continues from its saved state: same step counter, earlier snapshots kept."""
    import prefrl.oracle.training as oracle_module

    record = oracle_module._SnapshotCallback._on_step

    def interrupt_at_330(self):
        if self.num_timesteps == 330:
            raise KeyboardInterrupt
        return record(self)

    monkeypatch.setattr(oracle_module._SnapshotCallback, "_on_step", interrupt_at_330)
    common = dict(steps=1200, eval_episodes=2, verbose=False, state_dir=tmp_path / "state",
                  value_correction=TINY_CORRECTION)  # fmt: skip
    oracle_module.train_oracle("pendulum", out=tmp_path / "first", **common)
    first_wall = json.loads((tmp_path / "state" / "meta.json").read_text())["wall_s"]
    monkeypatch.setattr(oracle_module._SnapshotCallback, "_on_step", record)
    out = oracle_module.train_oracle("pendulum", out=tmp_path / "resumed", resume=True, **common)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train_steps"] == 1200
    assert manifest["command"].endswith("--resume")
    saved = json.loads((tmp_path / "state" / "meta.json").read_text())
    # the wall time adds up over both sessions
    assert saved["num_timesteps"] == 1200 and manifest["train_wall_s"] > first_wall > 0
    # the snapshots taken before the interruption (every 30 steps; Ctrl-C came just before the one at 330)
    # came back with the state, and the resumed run went on taking them
    snapshots = oracle_module.th.load(tmp_path / "state" / "extra.pt", weights_only=False)
    assert [s["step"] for s in snapshots] == [step for step in range(30, 1201, 30) if step != 330]
    # starting afresh over a saved state says so, since that state will be replaced
    with pytest.warns(UserWarning, match="step 1200.*pass --resume"):
        oracle_module.train_oracle("pendulum", out=tmp_path / "afresh", **{**common, "steps": 1})
    # a damaged state blocks --resume with a clear error, but not a fresh start that replaces it
    (tmp_path / "state" / "meta.json").write_text("{not json")
    with pytest.raises(TrainingStateError, match="corrupted training state"):
        oracle_module.train_oracle("pendulum", out=tmp_path / "again", resume=True, **{**common, "steps": 2})
    with pytest.warns(UserWarning, match="damaged"):
        oracle_module.train_oracle("pendulum", out=tmp_path / "again", **{**common, "steps": 1})
    assert json.loads((tmp_path / "state" / "meta.json").read_text())["num_timesteps"] == 1


def test_resume_errors_are_clear(tmp_path):
    from prefrl.errors import TrainingStateError
    from prefrl.oracle.training import train_oracle

    with pytest.raises(TrainingStateError, match="nothing to resume"):
        train_oracle("pendulum", steps=100, out=tmp_path, resume=True, state_dir=tmp_path)
    with pytest.raises(OracleError, match="SAC oracles only"):
        train_oracle("reacher", steps=64, algo="ppo", out=tmp_path, resume=True)
