"""Where oracles are written and read: user folder before shipped, complete folders only, install.

The issue: ``prefrl oracle train`` overwrote the shipped expert in place, printing nothing, and an
interrupted run left a new expert beside the old value correction and anchors, which ``regret`` then used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch as th

import prefrl.oracle.loading as loading
from prefrl import cli
from prefrl.envs import ENV_DIR, load_env_spec
from prefrl.errors import OracleError
from prefrl.oracle import load_oracle, oracle_dir, resolve_oracle_dir, user_oracle_root
from prefrl.oracle.loading import CHECKPOINT_ROOT, CORRECTION_FILE, MANIFEST, ORACLE_DIR_ENV, forget_oracle
from prefrl.oracle.storage import install_oracle
from prefrl.oracle.training import default_state_dir, train_oracle

#: a value correction small enough for training tests, always accepted (the real settings are in
#: agents/oracle.yaml)
TINY_CORRECTION = {"episodes": 2, "validation_episodes": 1, "steps": 20, "min_gain": -1.0}

#: the fastest oracle run that still has snapshots, levels and an accepted correction
TINY_RUN = {"steps": 300, "eval_episodes": 2, "value_correction": TINY_CORRECTION}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def trained(private_user_oracles: Path) -> Path:
    """A tiny Pendulum oracle trained with the defaults: into the (private) user folder."""
    shipped_before = _hashes(CHECKPOINT_ROOT)
    spec_before = (ENV_DIR / "pendulum.yaml").read_bytes()
    out = train_oracle("pendulum", verbose=False, **TINY_RUN)
    # the shipped checkpoints and the env YAML are byte-identical afterwards
    assert _hashes(CHECKPOINT_ROOT) == shipped_before
    assert (ENV_DIR / "pendulum.yaml").read_bytes() == spec_before
    return out


def _user_copy(trained: Path, root: Path, name: str = "pendulum") -> Path:
    """A private copy of the trained oracle as ``name``'s user oracle under ``root``."""
    target = root / name
    shutil.copytree(trained, target)
    forget_oracle(target)
    return target


def test_user_oracle_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ORACLE_DIR_ENV, str(tmp_path / "mine"))
    assert user_oracle_root() == tmp_path / "mine"
    monkeypatch.delenv(ORACLE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_oracle_root() == tmp_path / "xdg" / "prefrl" / "oracles"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert user_oracle_root() == tmp_path / "home" / ".cache" / "prefrl" / "oracles"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_oracle_root() == tmp_path / "home" / ".cache" / "prefrl" / "oracles"


def test_training_writes_a_complete_oracle_into_the_user_folder(trained, private_user_oracles):
    assert trained == private_user_oracles / "pendulum"
    manifest = json.loads((trained / MANIFEST).read_text())
    assert manifest["complete"] is True and manifest["gym_id"] == "Pendulum-v1"
    listed = {"expert.pt", CORRECTION_FILE} | {level["file"] for level in manifest["levels"]}
    assert set(manifest["files"]) == listed
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((trained / name).read_bytes()).hexdigest() == digest
    # the correction names its expert; the anchors are in the manifest, not in the env YAML
    assert manifest["value_correction"]["expert_sha256"] == manifest["files"]["expert.pt"]
    assert manifest["random_return"] < 0 and manifest["oracle_return"] < 0
    # the resumable training state sits beside the oracle folder; no staging folder is left behind
    state = default_state_dir(trained, 0)
    assert state == private_user_oracles / "pendulum.training" / "seed0" and (state / "meta.json").is_file()
    assert sorted(p.name for p in private_user_oracles.iterdir()) == ["pendulum", "pendulum.training"]


def test_loader_prefers_the_user_oracle_and_says_which(trained, tmp_path, monkeypatch, caplog):
    spec = load_env_spec("pendulum")
    monkeypatch.setenv(ORACLE_DIR_ENV, str(tmp_path))
    assert resolve_oracle_dir(spec) == (CHECKPOINT_ROOT / "pendulum", "shipped")  # nothing there yet
    user = _user_copy(trained, tmp_path)
    assert resolve_oracle_dir(spec) == (user, "user") and oracle_dir(spec) == user
    with caplog.at_level(logging.INFO, logger="prefrl.oracle.loading"):
        oracle = load_oracle("pendulum")
    assert oracle.directory == user and oracle.source == "user"
    assert f"using the user oracle in {user}" in caplog.text
    assert oracle.manifest.train_steps == 300  # not the shipped 20k-step expert
    # an explicit folder comes first
    assert load_oracle(spec, CHECKPOINT_ROOT / "pendulum").source == "shipped"
    assert resolve_oracle_dir(spec, tmp_path / "elsewhere") == (tmp_path / "elsewhere", "explicit")


def _delete_manifest(folder: Path) -> None:
    (folder / MANIFEST).unlink()


def _truncate_a_level(folder: Path) -> None:
    level = folder / "level0.pt"
    level.write_bytes(level.read_bytes()[:100])


def _unmark_complete(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))


def _drop_the_expert(folder: Path) -> None:
    (folder / "expert.pt").unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_delete_manifest, "has no manifest.json: it is incomplete"),
        (_truncate_a_level, "is damaged: level0.pt differs"),
        (_unmark_complete, "is incomplete (its manifest.json is not marked complete"),
        (_drop_the_expert, "is incomplete: expert.pt is missing"),
    ],
    ids=["no_manifest", "truncated_file", "not_complete", "missing_file"],
)
def test_a_half_written_oracle_is_refused_in_one_line(
    trained, tmp_path, monkeypatch, capsys, damage, message
):
    monkeypatch.setenv(ORACLE_DIR_ENV, str(tmp_path))
    user = _user_copy(trained, tmp_path)
    damage(user)
    with pytest.raises(OracleError) as error:
        load_oracle("pendulum")
    text = str(error.value)
    assert message in text and "\n" not in text
    # it names the folder and the fix; it never falls back to the shipped oracle silently
    assert f"re-run `prefrl oracle train --env pendulum` or delete {user}" in text
    # the command line: the same line, exit status 2
    assert cli.main(["oracle", "eval", "--env", "pendulum", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_interrupted_training_leaves_the_previous_oracle(trained, tmp_path, monkeypatch):
    """Ctrl-C while the value correction is fitted (the long silent phase of the issue): the folder
    keeps the previous oracle, all of it, and no partial folder is left."""
    import prefrl.oracle.training as training

    monkeypatch.setenv(ORACLE_DIR_ENV, str(tmp_path))
    user = _user_copy(trained, tmp_path)
    before = _hashes(user)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "fit_value_correction", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_oracle("pendulum", verbose=False, state_dir=tmp_path / "state", **{**TINY_RUN, "steps": 100})
    assert _hashes(user) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pendulum", "state"]
    assert load_oracle("pendulum").directory == user


def test_nothing_writes_the_shipped_checkpoints_but_install(tmp_path):
    with pytest.raises(OracleError, match=r"shipped checkpoints.*prefrl oracle install --env pendulum"):
        train_oracle("pendulum", out=CHECKPOINT_ROOT / "pendulum", steps=10)
    from prefrl.oracle.training import correct_value

    with pytest.raises(OracleError, match=r"shipped checkpoints"):
        correct_value("pendulum", out=CHECKPOINT_ROOT / "pendulum")


def test_the_loader_reads_no_pickle(trained, monkeypatch):
    """Weights and value corrections load with ``weights_only=True``; the manifest is JSON."""
    calls = []
    real_load = th.load

    def checked_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(th, "load", checked_load)
    forget_oracle(trained)
    oracle = load_oracle("pendulum", trained)
    for name in oracle.checkpoint_names:
        oracle.policy(name)
    assert oracle.correction is not None and calls and all(flag is True for flag in calls)


@pytest.fixture
def package_tree(tmp_path, monkeypatch):
    """A temporary shipped-checkpoint tree and a temporary copy of the Pendulum spec (``pendulum_copy``,
    whose ``oracle.checkpoint`` still names the ``pendulum`` folder)."""
    root = tmp_path / "checkpoints"
    root.mkdir()
    monkeypatch.setattr(loading, "CHECKPOINT_ROOT", root)
    spec_file = tmp_path / "specs" / "pendulum_copy.yaml"
    spec_file.parent.mkdir()
    shutil.copyfile(ENV_DIR / "pendulum.yaml", spec_file)
    return root, spec_file


def test_install_copies_a_complete_oracle_and_records_its_anchors(trained, package_tree, capsys):
    root, spec_file = package_tree
    manifest = json.loads((trained / MANIFEST).read_text())
    assert cli.main(["oracle", "install", "--env", str(spec_file), "--from", str(trained)]) == 0
    assert f"installed {root / 'pendulum'}" in capsys.readouterr().out
    installed = root / "pendulum"
    assert _hashes(installed) == _hashes(trained)
    spec = load_env_spec(spec_file)
    assert spec.random_return == pytest.approx(manifest["random_return"], abs=0.005)
    assert spec.oracle_return == pytest.approx(manifest["oracle_return"], abs=0.005)
    assert "# measured by" in spec_file.read_text()  # the YAML keeps its comments
    oracle = load_oracle(spec, installed)
    assert oracle.source == "shipped" and oracle.value(np.zeros((2, 3))).shape == (2,)
    # installing again replaces the folder as a whole
    assert install_oracle(spec, trained) == installed and _hashes(installed) == _hashes(trained)


def test_install_refuses_incomplete_or_missing_sources(trained, package_tree, tmp_path, capsys):
    root, spec_file = package_tree
    spec_before = spec_file.read_bytes()
    half = tmp_path / "half"
    shutil.copytree(trained, half)
    _truncate_a_level(half)
    assert cli.main(["oracle", "install", "--env", str(spec_file), "--from", str(half)]) == 2
    assert "is damaged: level0.pt differs" in capsys.readouterr().err
    with pytest.raises(OracleError, match="nothing to install"):
        install_oracle(spec_file, tmp_path / "empty")
    # the user folder of the spec's name (pendulum_copy) is empty: nothing to install by default either
    assert cli.main(["oracle", "install", "--env", str(spec_file)]) == 2
    assert "nothing to install" in capsys.readouterr().err
    assert list(root.iterdir()) == [] and spec_file.read_bytes() == spec_before


@pytest.mark.slow  # ~9 s: a whole (tiny) oracle run through the command line, on a user spec file
def test_cli_trains_a_user_spec_file_with_progress(tmp_path, monkeypatch, capsys):
    """``--env PATH.yaml``: the oracle goes to the user folder of the spec's name and loads from there;
    progress lines show on stdout."""
    from prefrl.cli import oracle as oracle_cli

    monkeypatch.setenv(ORACLE_DIR_ENV, str(tmp_path / "oracles"))
    monkeypatch.setattr(oracle_cli, "train_oracle", functools.partial(train_oracle, **TINY_RUN))
    spec_file = tmp_path / "swing.yaml"
    shutil.copyfile(ENV_DIR / "pendulum.yaml", spec_file)
    assert cli.main(["oracle", "train", "--env", str(spec_file), "--steps", "300", "--algo", "sac"]) == 0
    out = capsys.readouterr().out
    assert "oracle swing: 30/300 steps" in out and "oracle swing: 300/300 steps" in out
    assert "fitting the value correction" in out
    folder = tmp_path / "oracles" / "swing"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["env"] == "swing" and f"--env {spec_file}" in manifest["command"]
    assert load_oracle(str(spec_file)).directory == folder
    # a user spec without a trained oracle is told to train it by its path
    other = tmp_path / "other.yaml"
    shutil.copyfile(ENV_DIR / "pendulum.yaml", other)
    other.write_text(other.read_text().replace("checkpoint: pendulum", "checkpoint: other"))
    with pytest.raises(OracleError, match=rf"no oracle for env 'other'.*--env {other}"):
        load_oracle(str(other))


def test_help_names_the_defaults_and_choices(capsys):
    for command in ("train", "eval", "correct-value", "install"):
        with pytest.raises(SystemExit) as done:
            cli.main(["oracle", command, "--help"])
        assert done.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--env" in text and "spec YAML" in text
        if command in ("train", "install"):
            assert "$PREFRL_ORACLE_DIR/ENV" in text and "~/.cache/prefrl/oracles/ENV" in text
    cli.build_parser()  # the group still builds
    with pytest.raises(SystemExit):
        cli.main(["oracle", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{sac,ppo}" in text and "(default: 5)" in text and "(default: 0)" in text


def test_correct_value_of_the_shipped_oracle_goes_to_the_user_folder(tmp_path, monkeypatch):
    from prefrl.oracle.training import correct_value

    monkeypatch.setenv(ORACLE_DIR_ENV, str(tmp_path))
    shipped_before = _hashes(CHECKPOINT_ROOT / "pendulum")
    manifest = correct_value("pendulum", verbose=False, **TINY_CORRECTION)
    assert _hashes(CHECKPOINT_ROOT / "pendulum") == shipped_before
    user = tmp_path / "pendulum"
    assert manifest.complete and json.loads((user / MANIFEST).read_text())["complete"] is True
    # the same expert and levels, a new correction fitted to that expert
    shipped = json.loads((CHECKPOINT_ROOT / "pendulum" / MANIFEST).read_text())
    assert {k: v for k, v in manifest.files.items() if k != CORRECTION_FILE} == {
        k: v for k, v in shipped["files"].items() if k != CORRECTION_FILE
    }
    assert manifest.value_correction["expert_sha256"] == shipped["files"]["expert.pt"]
    assert load_oracle("pendulum").directory == user


def test_eval_prints_the_folder_it_measured(trained, tmp_path, monkeypatch, capsys):
    import prefrl.oracle.quality as quality

    monkeypatch.setattr(quality, "value_quality", lambda oracle: {})  # the costly part, not checked here
    monkeypatch.setenv(ORACLE_DIR_ENV, str(tmp_path))
    user = _user_copy(trained, tmp_path)
    assert cli.main(["oracle", "eval", "--env", "pendulum", "--episodes", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["directory"] == str(user) and report["source"] == "user"
    assert cli.main(["oracle", "eval", "--env", "pendulum", "--episodes", "1", "--from", str(trained)]) == 0
    assert json.loads(capsys.readouterr().out)["directory"] == str(trained)
