"""Minari export / import: the round trip gives back the same dataset, Minari tools see episodes with the
labels and provenance in the metadata, nothing is written outside the given root, bad input is one line."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from prefrl.cli import main
from prefrl.dataset_minari import MINARI_INSTALL, MINARI_LAYOUT, export_minari, import_minari
from prefrl.datasets import build_dataset, load_dataset
from prefrl.errors import DatasetError, MissingExtraError

HAVE_MINARI = importlib.util.find_spec("minari") is not None and importlib.util.find_spec("h5py") is not None
needs_minari = pytest.mark.skipif(
    not HAVE_MINARI, reason="needs the minari extra: pip install 'prefrl[minari]'"
)

# 6 checkpoints x 1 episode x 4 segments of 50 steps, 12 sparse pairs: a few seconds on the CPU
TINY = {"episodes": 6, "segment": 50, "pairs": "sparse", "return_episodes": 0, "n_envs": 1}
ID = "prefrl/pendulum-tiny-v0"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_dataset(
        "pendulum", "partial_return", out=tmp_path_factory.mktemp("npz") / "tiny.npz", **TINY
    )


@pytest.fixture(autouse=True)
def no_home_datasets(monkeypatch, tmp_path):
    """Minari's default root (~/.minari) lies in tmp_path: a test that forgets its root cannot write home."""
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _npz(path):
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# ---- round trip ----------------------------------------------------------------------------------------
@needs_minari
def test_round_trip_gives_back_the_same_dataset(built, tmp_path):
    root = tmp_path / "minari"
    target = export_minari(built, ID, root)
    assert target == (root / ID).resolve() and (target / "data" / "metadata.json").is_file()
    assert "MINARI_DATASETS_PATH" not in os.environ  # set for the call only
    assert not (tmp_path / "home").exists()
    for source, out in [(ID, "by_id.npz"), (target, "by_path.npz"), (target / "data", "by_data.npz")]:
        path = import_minari(source, tmp_path / out, root=root)
        original, back = _npz(built), _npz(path)
        assert set(original) == set(back)
        for key, value in original.items():
            assert back[key].dtype == value.dtype, key
            np.testing.assert_array_equal(back[key], value, err_msg=key)
        a, b = load_dataset(built), load_dataset(path)
        assert a.provenance == b.provenance
        np.testing.assert_array_equal(a.preferences.pairs, b.preferences.pairs)
        np.testing.assert_array_equal(a.preferences.labels, b.preferences.labels)


@needs_minari
def test_minari_sees_one_episode_per_segment_with_labels_and_provenance(built, tmp_path, monkeypatch):
    import minari

    export_minari(built, ID, tmp_path, author="someone", code_permalink="https://example.org/prefrl")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    dataset = minari.load_dataset(ID)
    data = load_dataset(built)
    segs = data.segments
    assert dataset.total_episodes == segs.num_segments == 24 and dataset.total_steps == 24 * 50
    for episode in dataset.iterate_episodes([0, 23]):
        i = episode.id
        np.testing.assert_array_equal(episode.observations[:-1], segs.obs[i])
        np.testing.assert_array_equal(episode.observations[-1], segs.next_obs[i])
        np.testing.assert_array_equal(episode.actions, segs.act[i])
        np.testing.assert_array_equal(episode.rewards, segs.reward[i])
        assert not episode.terminations.any() and episode.truncations.tolist() == [False] * 49 + [True]
        assert episode.infos["factors"].shape == (51, 3) and np.isnan(episode.infos["factors"][0]).all()
        np.testing.assert_array_equal(episode.infos["factors"][1:], segs.factors[i])
        assert (episode.infos["source"] == segs.source[i]).all()
    meta = dataset.storage.metadata
    assert meta["author"] == {"someone"} and meta["code_permalink"] == "https://example.org/prefrl"
    assert "12 labelled pairs" in meta["description"] and "sac oracle" in meta["algorithm_name"]
    block = meta["prefrl"]
    assert block["layout"] == MINARI_LAYOUT
    assert block["pairs"] == data.preferences.pairs.tolist()
    assert block["labels"] == data.preferences.labels.tolist()
    assert block["provenance"] == data.provenance
    assert (block["env"], block["gym_id"], block["segment_length"]) == ("pendulum", "Pendulum-v1", 50)
    assert (block["rater_spec"], block["seed"], block["noise"]) == ("partial_return", 0, 0.3)
    assert block["factor_names"] == ["angle_sq", "velocity_sq", "torque_sq"]
    assert block["prefrl_version"] == data.provenance["prefrl_version"]
    assert block["build_command"].startswith("prefrl dataset build --env pendulum --rater partial_return")
    assert "--episodes 6" in block["build_command"] and "--n-envs 1" in block["build_command"]
    # the environment comes back with prefrl's horizon as its time limit
    env = dataset.recover_environment()
    assert env.spec.id == "Pendulum-v1" and env.spec.max_episode_steps == 200
    env.close()


@needs_minari
def test_the_environment_variable_is_the_default_root(built, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "from_env"))
    target = export_minari(built, "tiny-v3")  # the namespace is optional
    assert target == (tmp_path / "from_env" / "tiny-v3").resolve()
    assert import_minari("tiny-v3", tmp_path / "back.npz").is_file()


@needs_minari
def test_an_existing_id_needs_overwrite(built, tmp_path):
    export_minari(built, ID, tmp_path)
    with pytest.raises(DatasetError, match="already exists"):
        export_minari(built, ID, tmp_path)
    export_minari(built, ID, tmp_path, overwrite=True)
    assert load_dataset(import_minari(ID, tmp_path / "x.npz", tmp_path)).num_pairs == 12


@needs_minari
def test_a_minari_dataset_without_prefrl_labels_is_refused(tmp_path):
    path = _foreign_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no prefrl preference labels"):
        import_minari(path, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def _foreign_dataset(root):
    """A Minari dataset of two Pendulum episodes with no prefrl block (as any other tool writes one)."""
    import minari

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        buffers = [
            minari.data_collector.EpisodeBuffer(
                observations=np.zeros((4, 3), np.float32),
                actions=np.zeros((3, 1), np.float32),
                rewards=np.zeros(3),
                terminations=np.zeros(3, bool),
                truncations=np.array([False, False, True]),
            )
            for _ in range(2)
        ]
        with pytest.warns(UserWarning):  # Minari's reminders about missing author etc.
            minari.create_dataset_from_buffers("other/foreign-v0", buffers, env="Pendulum-v1")
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    return root / "other" / "foreign-v0"


def test_missing_minari_names_the_extra(built, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari raises ImportError
    for call in (lambda: export_minari(built, ID, tmp_path), lambda: import_minari(ID, tmp_path / "x.npz")):
        with pytest.raises(MissingExtraError, match=r"pip install 'prefrl\[minari\]'"):
            call()
    assert MINARI_INSTALL == "pip install 'prefrl[minari]'"


@needs_minari
def test_missing_h5py_names_the_extra(built, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "h5py" else find_spec(name, *a)
    )
    with pytest.raises(MissingExtraError, match="h5py"):
        export_minari(built, ID, tmp_path)


# ---- command line --------------------------------------------------------------------------------------
@needs_minari
def test_cli_export_then_import(built, tmp_path, capsys):
    root = tmp_path / "minari"
    assert main(["dataset", "export", str(built), "--format", "minari", "--id", ID, "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert str((root / ID).resolve()) in out and "24 segments (Minari episodes), 12 labelled pairs" in out
    back = tmp_path / "back.npz"
    assert main(["dataset", "import", ID, "--minari-dir", str(root), "--out", str(back)]) == 0
    assert str(back) in capsys.readouterr().out
    original, imported = _npz(built), _npz(back)
    assert all(np.array_equal(original[key], imported[key]) for key in original)
    assert json.loads(str(imported["provenance"])) == json.loads(str(original["provenance"]))


@needs_minari
@pytest.mark.parametrize(
    "argv, match",
    [
        (["export", "{npz}", "--format", "d4rl", "--id", ID], "format 'd4rl'; allowed: minari"),
        (["export", "{tmp}/missing.npz", "--id", ID], "missing.npz does not exist"),
        (["export", "{npz}", "--id", "pendulum-tiny"], "not a Minari dataset id"),
        (["export", "{npz}", "--id", "prefrl/pendulum tiny-v0"], "not a Minari dataset id"),
        (["import", "prefrl/unknown-v0", "--out", "{tmp}/x.npz"], "no Minari dataset 'prefrl/unknown-v0'"),
        (["import", "{tmp}/missing", "--out", "{tmp}/x.npz"], "no such file or directory"),
        (["import", "{tmp}", "--out", "{tmp}/x.npz"], "not a Minari dataset directory"),
        (["import", "{foreign}", "--out", "{tmp}/x.npz"], "no prefrl preference labels"),
    ],
)
def test_cli_bad_input_is_one_line(built, tmp_path, capsys, argv, match):
    foreign = _foreign_dataset(tmp_path / "foreign") if "{foreign}" in argv else None
    fill = {"npz": built, "tmp": tmp_path, "foreign": foreign}
    argv = [arg.format(**fill) for arg in argv]
    if argv[0] == "export":
        argv += ["--out", str(tmp_path / "minari")]
    else:
        argv += ["--minari-dir", str(tmp_path / "minari")]
    assert main(["dataset", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prefrl dataset: error: ") and match in err
