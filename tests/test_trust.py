"""The trust boundary: nothing prefrl loads from a run directory, dataset, oracle or training state runs code.

Every artefact type a prefrl command reads gets a planted payload: a pickle whose ``__reduce__`` creates a
marker file. The loading routes (library and command line) must refuse the file with one line (exit
status 2 on the command line) and the marker must never appear. The payload is shown to be live (plain
unpickling, and the explicit ``trust`` routes, do create the marker), so the refusals are not vacuous.
Paths from specs and manifests stay inside their folders.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import pathlib
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO, SAC

import prefrl.experiment
from prefrl import cli, render
from prefrl.agents import make_agent
from prefrl.agents.on_policy import (
    NORMALIZATION_FILE,
    POLICY_DESCRIPTION_FILE,
    POLICY_WEIGHTS_FILE,
    PPOAgent,
)
from prefrl.config import load_agent_config
from prefrl.datasets import load_dataset
from prefrl.envs import ENV_DIR, load_env_spec, make_vec_env
from prefrl.errors import DatasetError, OracleError, RunDirError, SpecError, TrainingStateError
from prefrl.experiment import run_experiment
from prefrl.oracle.loading import CHECKPOINT_ROOT, load_oracle, read_manifest, shipped_oracle_dir
from prefrl.oracle.training_state import LEGACY_MODEL, MODEL, restore_training_state, save_training_state
from prefrl.raters import make_rater
from prefrl.reward_artifact import REWARD_MODEL_FILE, REWARD_WEIGHTS_FILE, load_reward_model

IDENTITY = {"env": "pendulum", "seed": 0, "algo": "sac"}


class Payload:
    """Unpickling this creates ``marker``: the stand-in for arbitrary code in a crafted file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


def _torch_payload(path: Path, marker: Path, **tensors: torch.Tensor) -> None:
    """A torch archive that holds tensors and the payload (``torch.load(weights_only=False)`` runs it)."""
    torch.save({**tensors, "payload": Payload(marker)}, path)


def _plant_in_sb3_zip(path: Path, marker: Path) -> None:
    """Add the payload to the pickled entries of an SB3 archive (``PPO.load``, ``SAC.load`` unpickle them)."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    data["payload"] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(
        pickle.dumps(Payload(marker))).decode()}  # fmt: skip
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)


def _bad_input(argv: list[str], capsys) -> str:
    """Run the command line; it must refuse with one line and exit status 2; returns that line."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def _observations(n: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi, np.pi, n)
    return np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, n)], axis=1).astype(np.float32)


# ---- the payload is live --------------------------------------------------------------------------------


def test_the_payload_runs_when_unpickled(tmp_path, marker):
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.is_file()
    marker.unlink()
    _torch_payload(tmp_path / "w.pt", marker, w=torch.zeros(2))
    torch.load(tmp_path / "w.pt", weights_only=False)
    assert marker.is_file()


# ---- PPO-based runs: safe files, equal actions, refused payloads ----------------------------------------

_TINY_RM = {
    "n_envs": 2,
    "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2},
    "reward_model": {"net_arch": [16], "initial_epochs": 5, "epochs": 2},
}
RUNS = {
    "ppo": (None, {"steps": 128}, {"n_envs": 2, "policy_kwargs": {"net_arch": [16]},
                                   "ppo": {"n_steps": 64, "n_epochs": 1}}),
    "rm_ppo": ("partial_return", {"steps": 256, "queries": 30}, _TINY_RM),
}  # fmt: skip


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> dict:
    """``agent -> (run_dir, trained agent)``: tiny ppo and rm_ppo runs with ``normalize: true``."""
    runs = {}
    root = tmp_path_factory.mktemp("trust")
    with pytest.MonkeyPatch.context() as patch:
        trained, real_make_agent = [], prefrl.experiment.make_agent

        def recording_make_agent(*args, **kwargs):
            trained.append(real_make_agent(*args, **kwargs))
            return trained[-1]

        patch.setattr(prefrl.experiment, "make_agent", recording_make_agent)
        for agent, (rater, options, overrides) in RUNS.items():
            run_dir = run_experiment("pendulum", agent, rater, 0, out=root / agent,
                                     overrides={**overrides, "normalize": True}, eval_freq=options["steps"],
                                     n_eval_episodes=1, progress_bar=False, **options)  # fmt: skip
            runs[agent] = (run_dir, trained[-1])
    return runs


def _copy_run(trained_runs: dict, agent: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_runs[agent][0], tmp_path / "run"))


@pytest.mark.parametrize("agent", list(RUNS))
def test_safe_policy_acts_as_the_trained_agent_and_sb3(trained_runs, agent):
    run_dir, trained = trained_runs[agent]
    for name in (POLICY_WEIGHTS_FILE, POLICY_DESCRIPTION_FILE, NORMALIZATION_FILE, "policy.zip"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "vecnormalize.pkl").exists()
    obs = _observations()
    spec, predict = render.load_policy(run_dir)
    actions = predict(obs)
    assert actions.shape == (32, 1) and spec.name == "pendulum"
    np.testing.assert_array_equal(actions, trained.predict(obs, deterministic=True))
    # SB3 users: policy.zip is still SB3's own archive, acting alike on the saved statistics
    stats = json.loads((run_dir / NORMALIZATION_FILE).read_text())["obs_rms"]
    model_obs = trained.venv.normalize_obs(obs)
    np.testing.assert_allclose(stats["mean"], trained.venv.obs_rms.mean)
    expected, _ = PPO.load(run_dir / "policy.zip", device="cpu").predict(model_obs, deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    assert float(np.abs(model_obs - obs).max()) > 0.1  # the statistics matter for this batch


def test_tampered_safe_files_are_refused(trained_runs, tmp_path, marker, capsys):
    run_dir = _copy_run(trained_runs, "ppo", tmp_path)
    state = torch.load(run_dir / POLICY_WEIGHTS_FILE, weights_only=True)
    _torch_payload(run_dir / POLICY_WEIGHTS_FILE, marker, **state)
    with pytest.raises(RunDirError, match="not a readable weights file"):
        render.load_policy(run_dir)
    err = _bad_input(["render", "--run", str(run_dir), "--out", str(tmp_path / "x.gif")], capsys)
    assert POLICY_WEIGHTS_FILE in err
    # --trust opens no door for the safe files: they are never unpickled
    _bad_input(["render", "--run", str(run_dir), "--trust", "--out", str(tmp_path / "x.gif")], capsys)
    assert not marker.exists()
    # an edited description cannot name code either: only the known policy class and activations
    torch.save(state, run_dir / POLICY_WEIGHTS_FILE)
    description = json.loads((run_dir / POLICY_DESCRIPTION_FILE).read_text())
    description["policy_kwargs"]["features_extractor_class"] = "os.system"
    (run_dir / POLICY_DESCRIPTION_FILE).write_text(json.dumps(description))
    with pytest.raises(RunDirError, match="cannot be rebuilt"):
        render.load_policy(run_dir)
    description["policy_kwargs"].pop("features_extractor_class")
    description["policy_class"] = "os.system"
    (run_dir / POLICY_DESCRIPTION_FILE).write_text(json.dumps(description))
    with pytest.raises(RunDirError, match="not a valid policy description"):
        render.load_policy(run_dir)
    # the normaliser the description names must be there: no silent un-normalised policy
    description["policy_class"] = "ActorCriticPolicy"
    (run_dir / POLICY_DESCRIPTION_FILE).write_text(json.dumps(description))
    (run_dir / NORMALIZATION_FILE).unlink()
    with pytest.raises(RunDirError, match=f"{NORMALIZATION_FILE} is missing"):
        render.load_policy(run_dir)


def _as_older_run(run_dir: Path) -> None:
    """What a run saved before the safe files looks like: SB3's policy.zip and a pickled normaliser."""
    for name in (POLICY_WEIGHTS_FILE, POLICY_DESCRIPTION_FILE, NORMALIZATION_FILE):
        (run_dir / name).unlink()


@pytest.mark.parametrize("planted", ["policy.zip", "vecnormalize.pkl"])
def test_older_runs_are_unpickled_only_with_trust(trained_runs, tmp_path, marker, capsys, planted):
    run_dir = _copy_run(trained_runs, "ppo", tmp_path)
    _as_older_run(run_dir)
    trained = trained_runs["ppo"][1]
    if planted == "policy.zip":
        _plant_in_sb3_zip(run_dir / "policy.zip", marker)
        trained.venv.save(str(run_dir / "vecnormalize.pkl"))
    else:
        (run_dir / "vecnormalize.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(RunDirError, match="--trust"):
        render.load_policy(run_dir)
    with pytest.raises(RunDirError, match=r"saved before prefrl's safe policy files"):
        PPOAgent.load_policy(run_dir)
    err = _bad_input(["render", "--run", str(run_dir), "--out", str(tmp_path / "x.gif")], capsys)
    assert "--trust" in err and "can run code" in err
    assert not marker.exists()
    # the flag is the one door, and it does what its help says: it unpickles (the payload runs)
    if planted == "policy.zip":
        _, predict = render.load_policy(run_dir, trust=True)
        obs = _observations()
        np.testing.assert_array_equal(predict(obs), trained.predict(obs))
    else:
        with pytest.raises(Exception):  # noqa: B017 (the payload is no VecNormalize)
            render.load_policy(run_dir, trust=True)
    assert marker.is_file()


def test_trust_flags_say_what_they_do():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    render_help = sub["render"].format_help()
    oracle_train = next(a for a in sub["oracle"]._actions if a.dest == "oracle_command").choices["train"]
    for text in (render_help, oracle_train.format_help()):
        flat = " ".join(text.split())
        assert "--trust" in flat and "UNPICKLE" in flat and "runs code" in flat


# ---- offline runs (cpl, bc) -----------------------------------------------------------------------------


def _offline_run(tmp_path: Path) -> tuple[Path, object]:
    """A bc run directory with an (untrained) policy saved by the agent; returns it and the agent."""
    spec = load_env_spec("pendulum")
    overrides = {"policy_kwargs": {"net_arch": [8]}, "offline": {"dropout": 0.0}}
    config = load_agent_config("bc", "pendulum", overrides)
    agent = make_agent("bc", spec, config, rater=make_rater("partial_return", spec), seed=0)
    run_dir = tmp_path / "bc"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"env": "pendulum", "agent": "bc", "config": config}))
    (run_dir / "env.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    agent.save(run_dir / "policy.zip")
    return run_dir, agent


def test_offline_policy_is_tensors_only_and_payloads_are_refused(tmp_path, marker, capsys):
    run_dir, agent = _offline_run(tmp_path)
    # the archive loads with weights_only=True; the metadata went to JSON
    archive = torch.load(run_dir / "policy.zip", weights_only=True)
    assert set(archive) == {"state_dict", "action_low", "action_high"}
    assert json.loads((run_dir / "policy.json").read_text())["agent"] == "bc"
    obs = _observations()
    _, predict = render.load_policy(run_dir)
    np.testing.assert_array_equal(predict(obs), agent.predict(obs))

    _torch_payload(run_dir / "policy.zip", marker, state_dict=archive["state_dict"])
    with pytest.raises(RunDirError, match=r"not an archive of tensors.*--trust"):
        render.load_policy(run_dir)
    with pytest.raises(RunDirError, match="not an archive of tensors"):
        agent.load_weights(run_dir / "policy.zip")
    _bad_input(["render", "--run", str(run_dir), "--out", str(tmp_path / "x.gif")], capsys)
    assert not marker.exists()
    # an older archive (numpy arrays, the config) is read with --trust only, and then unpickled
    render.load_policy(run_dir, trust=True)
    assert marker.is_file()


# ---- the SAC training state behind `prefrl oracle train --resume` ---------------------------------------


def _sac(seed: int = 0) -> SAC:
    venv = make_vec_env(load_env_spec("pendulum"), n_envs=1, seed=seed)
    kwargs = dict(net_arch=[16, 16])
    return SAC("MlpPolicy", venv, learning_starts=50, buffer_size=500, policy_kwargs=kwargs, seed=seed)


@pytest.fixture(scope="module")
def sac_state(tmp_path_factory) -> tuple[Path, SAC]:
    model = _sac()
    model.learn(120)
    folder = tmp_path_factory.mktemp("state") / "seed0"
    save_training_state(model, folder, IDENTITY, extra=[{"step": 1, "state": {"w": torch.ones(2)}}])
    return folder, model


def test_training_state_holds_no_pickle(sac_state, tmp_path):
    folder, model = sac_state
    assert not (folder / LEGACY_MODEL).exists()
    torch.load(folder / MODEL, weights_only=True)
    np.load(folder / "replay.npz", allow_pickle=False)["observations"]
    fresh = _sac(seed=5)
    extra, meta = restore_training_state(fresh, folder, expect=IDENTITY)
    assert meta["num_timesteps"] == 120 == fresh.num_timesteps and fresh._n_updates == model._n_updates
    torch.testing.assert_close(extra[0]["state"]["w"], torch.ones(2))
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(fresh.policy.state_dict()[key], value)
    torch.testing.assert_close(fresh.log_ent_coef, model.log_ent_coef)
    old, new = model.critic.optimizer.state_dict(), fresh.critic.optimizer.state_dict()
    torch.testing.assert_close(new["state"][0]["exp_avg_sq"], old["state"][0]["exp_avg_sq"])


@pytest.mark.parametrize("planted", [MODEL, "extra.pt", "replay.npz"])
def test_training_state_payloads_are_refused(sac_state, tmp_path, marker, planted):
    folder = Path(shutil.copytree(sac_state[0], tmp_path / "seed0"))
    if planted == "replay.npz":
        with np.load(folder / "replay.npz") as data:
            arrays = {name: data[name] for name in data.files}
        arrays["observations"] = np.array([Payload(marker)], dtype=object)
        with open(folder / "replay.npz", "wb") as fh:
            np.savez(fh, **arrays)
    else:
        _torch_payload(folder / planted, marker, w=torch.zeros(1))
    with pytest.raises(TrainingStateError, match="corrupted training state"):
        restore_training_state(_sac(), folder, expect=IDENTITY)
    assert not marker.exists()


def test_older_training_state_needs_trust(sac_state, tmp_path, marker, capsys):
    folder = Path(shutil.copytree(sac_state[0], tmp_path / "seed0"))
    model = sac_state[1]
    (folder / MODEL).unlink()
    model.save(folder / LEGACY_MODEL)
    _plant_in_sb3_zip(folder / LEGACY_MODEL, marker)
    with pytest.raises(TrainingStateError, match=r"older prefrl.*--trust"):
        restore_training_state(_sac(), folder, expect=IDENTITY)
    # the command line: the state beside --out, refused before anything trains
    out = tmp_path / "oracle"
    shutil.copytree(folder, tmp_path / "oracle.training" / "seed0")
    argv = ["oracle", "train", "--env", "pendulum", "--algo", "sac", "--out", str(out), "--resume",
            "--steps", "200"]  # fmt: skip
    err = _bad_input(argv, capsys)
    assert "--trust" in err and not out.exists()
    assert not marker.exists()
    # with trust, the older state is read (unpickled: the payload runs) and continues where it was
    fresh = _sac()
    restore_training_state(fresh, folder, expect=IDENTITY, trust=True)
    assert marker.is_file() and fresh.num_timesteps == 120
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(fresh.policy.state_dict()[key], value)


# ---- reward models, datasets ----------------------------------------------------------------------------


def test_reward_model_payload_is_refused(trained_runs, tmp_path, marker):
    run_dir = _copy_run(trained_runs, "rm_ppo", tmp_path)
    weights = run_dir / REWARD_WEIGHTS_FILE
    _torch_payload(weights, marker, **torch.load(weights, weights_only=True))
    # the description's checksum is updated, so the loader reaches the weights themselves
    description = json.loads((run_dir / REWARD_MODEL_FILE).read_text())
    description["weights"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (run_dir / REWARD_MODEL_FILE).write_text(json.dumps(description))
    with pytest.raises(RunDirError, match="not a readable weights file"):
        load_reward_model(run_dir, make_vec_env("pendulum"))
    assert not marker.exists()


def test_dataset_object_array_is_refused(tmp_path, marker, capsys):
    path = tmp_path / "data.npz"
    arrays = {key: np.zeros(2) for key in ("act", "reward", "factors", "dones", "next_obs", "source",
                                           "pairs", "labels")}  # fmt: skip
    np.savez(path, obs=np.array([Payload(marker)], dtype=object), provenance=np.array("{}"), **arrays)
    with pytest.raises(DatasetError, match=r"corrupted or not an .npz"):
        load_dataset(path)
    _bad_input(["dataset", "export", str(path), "--id", "prefrl/x-v0", "--out", str(tmp_path / "m")], capsys)
    assert not marker.exists()


# ---- oracles: checkpoints, manifests, spec paths --------------------------------------------------------


def _oracle_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(CHECKPOINT_ROOT / "pendulum", tmp_path / "oracle"))


def _reseal(folder: Path, name: str) -> None:
    """Record ``name``'s new sha256 in the manifest, as a crafted folder would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    if name == manifest["expert"]["file"] and manifest.get("value_correction"):
        manifest["value_correction"]["expert_sha256"] = manifest["files"][name]
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("planted", ["expert.pt", "value_correction.pt"])
def test_oracle_checkpoint_payload_is_refused(tmp_path, marker, capsys, planted):
    folder = _oracle_copy(tmp_path)
    state = torch.load(folder / planted, weights_only=True)
    _torch_payload(folder / planted, marker, **state)
    _reseal(folder, planted)
    with pytest.raises(OracleError, match="corrupted"):
        load_oracle(load_env_spec("pendulum"), directory=folder)
    err = _bad_input(
        ["oracle", "eval", "--env", "pendulum", "--from", str(folder), "--episodes", "1"], capsys
    )
    assert planted in err
    assert not marker.exists()


@pytest.mark.parametrize("where", ["expert", "levels", "files"])
def test_manifest_file_names_stay_in_the_oracle_folder(tmp_path, marker, capsys, where):
    folder = _oracle_copy(tmp_path / "inner")
    outside = tmp_path / "outside.pt"
    _torch_payload(outside, marker, w=torch.zeros(1))
    manifest = json.loads((folder / "manifest.json").read_text())
    name = "../../outside.pt"
    if where == "expert":
        manifest["expert"]["file"] = name
    elif where == "levels":
        manifest["levels"][0]["file"] = name
    manifest["files"][name] = hashlib.sha256(outside.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    spec = load_env_spec("pendulum")
    with pytest.raises(OracleError, match="not a plain file name inside the oracle folder"):
        read_manifest(spec, folder)
    # `prefrl oracle install` reads the source through read_manifest too (not run here: it writes the
    # shipped checkpoints when it succeeds)
    _bad_input(["oracle", "eval", "--env", "pendulum", "--from", str(folder)], capsys)
    assert not marker.exists()


@pytest.mark.parametrize("checkpoint", ["../../etc", "/etc", "a/b", "..", ".hidden", "a\\b"])
def test_spec_oracle_checkpoint_must_be_a_plain_name(tmp_path, capsys, checkpoint):
    data = yaml.safe_load((ENV_DIR / "pendulum.yaml").read_text())
    data["oracle"]["checkpoint"] = checkpoint
    data["name"] = "pendulum_escape"
    path = tmp_path / "pendulum_escape.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"oracle.checkpoint.*not a plain folder name") as error:
        load_env_spec(path)
    assert "\n" not in str(error.value)
    err = _bad_input(["oracle", "eval", "--env", str(path)], capsys)
    assert "oracle.checkpoint" in err


@pytest.mark.parametrize("checkpoint", ["../../etc", "/etc", "a/b", "..", "a\\b", "."])
def test_checkpoint_join_stays_in_the_checkpoint_root(checkpoint):
    # a spec built in code skips the parser: the join itself refuses to leave the checkpoint root
    spec = dataclasses.replace(load_env_spec("pendulum"), oracle={"algo": None, "checkpoint": checkpoint})
    with pytest.raises(OracleError, match="not a plain name inside"):
        shipped_oracle_dir(spec)
    with pytest.raises(OracleError, match="not a plain name inside"):
        load_oracle(spec)


def test_plain_checkpoint_names_still_resolve(tmp_path):
    spec = load_env_spec("pendulum")
    assert shipped_oracle_dir(spec) == CHECKPOINT_ROOT / "pendulum"
    data = yaml.safe_load((ENV_DIR / "pendulum.yaml").read_text())
    data["oracle"]["checkpoint"] = "my_oracle-v1.2"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data))
    renamed = load_env_spec(tmp_path / "mine.yaml")
    assert shipped_oracle_dir(renamed) == CHECKPOINT_ROOT / "my_oracle-v1.2"
