"""Every value validated where it enters, nothing dropped silently, bounded memory (issue 18, parts 4-6).

The table :data:`CASES` holds the bad inputs tried, by category (cli, specs, artefacts, faults, resources,
security). Each runs the real ``prefrl`` command in-process and must end with exit status 2 and exactly one
error line on stderr (argparse's usage line may precede it), never a traceback; ``expect`` is a pattern the
error line must contain. Training is patched out: a case that reached it would fail the test. The other
tests check the library side: the YAML loader, the number checks, the run scan of ``report``/``plot``, the
streamed video and the chunked ``rate``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml

import prefrl.experiment
from prefrl import analysis, cli, config, diagnostics, render, spec_utils
from prefrl.datasets import build_dataset
from prefrl.envs import ENV_DIR, load_env_spec
from prefrl.errors import ConfigError, DatasetError, OracleError, RunDirError, SpecError
from prefrl.oracle import loading
from prefrl.report import write_report

PENDULUM = yaml.safe_load((ENV_DIR / "pendulum.yaml").read_text())


# --------------------------------------------------------------------------------------------------
# The table of bad inputs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv(tmp_path)`` builds the command line (and any files it names)."""

    category: str
    name: str
    argv: Callable[[Path], list[str]]
    expect: str


def spec_file(tmp: Path, edit: Callable[[dict], None], name: str = "bad") -> str:
    """A copy of the pendulum spec changed by ``edit``, written to ``tmp/name.yaml``."""
    data = json.loads(json.dumps(PENDULUM))
    edit(data)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def rate_env(env: str) -> list[str]:
    return ["rate", "--env", env, "--rater", "partial_return", "--pairs", "10"]


def text_file(tmp: Path, name: str, text: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def fake_run(root: Path, name: str = "seed0", csv: str | None = None, config_text: str | None = None) -> Path:
    """A finished run directory with a three-row progress.csv (or ``csv``) and a config.yaml."""
    run_dir = root / "pendulum" / "ppo" / "none" / name
    run_dir.mkdir(parents=True)
    if csv is None:
        csv = "env_steps,queries,wall_s,true_return_mean,true_return_std\n"
        csv += "".join(f"{s},0,{s / 100},{-1000 + s / 2},1.0\n" for s in (0, 500, 1000))
    (run_dir / "progress.csv").write_text(csv)
    seed = int(name.removeprefix("seed")) if name.startswith("seed") else 0
    config_text = config_text or yaml.safe_dump(
        {"env": "pendulum", "agent": "ppo", "rater": "none", "seed": seed}
    )
    (run_dir / "config.yaml").write_text(config_text)
    (run_dir / "meta.json").write_text(json.dumps({"git_commit": "abc"}))
    (run_dir / "done").write_text("x\n")
    return run_dir


def sweep_with(tmp: Path, **damage: str) -> str:
    """A sweep root with one good run and one run damaged as ``damage`` says (``csv`` or ``config``)."""
    root = tmp / "sweep"
    fake_run(root, "seed0")
    fake_run(root, "seed1", csv=damage.get("csv"), config_text=damage.get("config"))
    return str(root)


def user_oracle(tmp: Path, edit: Callable[[dict], None]) -> str:
    """The shipped pendulum oracle copied to a user oracle folder, its manifest changed by ``edit``;
    returns the folder to set as ``$PREFRL_ORACLE_DIR``."""
    root = tmp / "oracles"
    shutil.copytree(loading.CHECKPOINT_ROOT / "pendulum", root / "pendulum")
    path = root / "pendulum" / loading.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    return str(root)


CASES = [
    # ---- command-line values -----------------------------------------------------------------------
    Case(
        "cli",
        "set-malformed-yaml",
        lambda t: ["run", "--agent", "ppo", "--set", "ppo.gamma=[1"],
        "not valid YAML",
    ),
    Case(
        "cli",
        "set-gamma-1.5",
        lambda t: ["run", "--agent", "ppo", "--set", "ppo.gamma=1.5"],
        r"ppo.gamma: must lie in \(0, 1\]",
    ),
    Case(
        "cli",
        "set-clip-negative",
        lambda t: ["run", "--agent", "ppo", "--set", "ppo.clip_range=-0.2"],
        "ppo.clip_range",
    ),
    Case(
        "cli", "set-lr-nan", lambda t: ["run", "--agent", "ppo", "--set", "ppo.learning_rate=nan"], "finite"
    ),
    Case(
        "cli",
        "set-lr-bad-schedule",
        lambda t: ["run", "--agent", "ppo", "--set", "ppo.learning_rate=lin_-1"],
        "learning_rate",
    ),
    Case(
        "cli", "set-n-steps-0", lambda t: ["run", "--agent", "ppo", "--set", "ppo.n_steps=0"], "ppo.n_steps"
    ),
    Case(
        "cli",
        "set-batch-1",
        lambda t: ["run", "--agent", "ppo", "--set", "ppo.batch_size=1"],
        "ppo.batch_size",
    ),
    Case(
        "cli",
        "set-ent-negative",
        lambda t: ["run", "--agent", "ppo", "--set", "ppo.ent_coef=-1"],
        "ppo.ent_coef",
    ),
    Case(
        "cli", "set-gae-0", lambda t: ["run", "--agent", "ppo", "--set", "ppo.gae_lambda=0"], "ppo.gae_lambda"
    ),
    Case("cli", "set-n-envs-text", lambda t: ["run", "--agent", "ppo", "--set", "n_envs=x"], "n_envs"),
    Case(
        "cli",
        "set-net-arch-text",
        lambda t: ["run", "--agent", "ppo", "--set", "policy_kwargs.net_arch=x"],
        "net_arch",
    ),
    Case(
        "cli",
        "set-activation-unknown",
        lambda t: ["run", "--agent", "ppo", "--set", "policy_kwargs.activation_fn=relux"],
        "did you mean",
    ),
    Case(
        "cli",
        "set-normalize-gamma",
        lambda t: ["run", "--agent", "ppo", "--set", "normalize.gamma=2"],
        "normalize.gamma",
    ),
    Case(
        "cli",
        "set-rm-lr-negative",
        lambda t: [
            "run",
            "--agent",
            "rm_ppo",
            "--rater",
            "partial_return",
            "--set",
            "reward_model.learning_rate=-1",
        ],
        "reward_model.learning_rate",
    ),
    Case(
        "cli",
        "set-value-and-nested",
        lambda t: ["run", "--agent", "ppo", "--set", "ppo=1", "--set", "ppo.gamma=0.9"],
        "nested keys",
    ),
    Case("cli", "steps-huge", lambda t: ["run", "--agent", "ppo", "--steps", str(10**20)], "steps"),
    Case(
        "cli",
        "queries-huge",
        lambda t: ["run", "--agent", "rm_ppo", "--rater", "partial_return", "--queries", str(10**13)],
        "queries",
    ),
    Case("cli", "seed-negative", lambda t: ["run", "--agent", "ppo", "--seed", "-1"], "--seed"),
    Case(
        "cli",
        "out-under-a-file",
        lambda t: ["run", "--agent", "ppo", "--out", text_file(t, "afile", "x") + "/run"],
        "afile",
    ),
    Case("cli", "report-reps-0", lambda t: ["report", str(t), "--reps", "0"], "--reps"),
    Case("cli", "plot-reps-negative", lambda t: ["plot", str(t), "--reps", "-3"], "--reps"),
    Case(
        "cli",
        "report-out-is-a-folder",
        lambda t: ["report", sweep_with(t), "--out", str(t), "--reps", "10"],
        "is a directory",
    ),
    Case("cli", "plot-empty-folder", lambda t: ["plot", str(t)], "no finished runs"),
    Case(
        "cli",
        "render-width-0",
        lambda t: ["render", "--env", "pendulum", "--pair", "--width", "0", "--out", str(t / "w.gif")],
        "--width",
    ),
    Case("cli", "render-fps-0", lambda t: ["render", "--env", "pendulum", "--pair", "--fps", "0"], "--fps"),
    Case("cli", "render-episodes-0", lambda t: ["render", "--run", str(t), "--episodes", "0"], "--episodes"),
    Case(
        "cli",
        "render-bad-suffix",
        lambda t: [
            "render",
            "--env",
            "pendulum",
            "--pair",
            "--segment-length",
            "2",
            "--out",
            str(t / "x.png"),
        ],
        "unsupported video format",
    ),
    Case("cli", "rate-pairs-0", lambda t: ["rate", "--rater", "partial_return", "--pairs", "0"], "--pairs"),
    Case(
        "cli",
        "rate-pairs-float-text",
        lambda t: ["rate", "--rater", "partial_return", "--pairs", "1e9"],
        "--pairs",
    ),
    Case(
        "cli", "rate-seed-negative", lambda t: ["rate", "--rater", "partial_return", "--seed", "-4"], "--seed"
    ),
    Case("cli", "rater-eps-nan", lambda t: ["rate", "--rater", "mistake:eps=nan", "--pairs", "10"], "eps"),
    Case(
        "cli",
        "rater-skip-margin-inf",
        lambda t: ["rate", "--rater", "skip:margin=inf", "--pairs", "10"],
        "margin",
    ),
    Case(
        "cli",
        "rater-threshold-nan",
        lambda t: ["rate", "--rater", "non_markovian:threshold=nan", "--pairs", "10"],
        "threshold",
    ),
    Case(
        "cli",
        "rater-panel-seed-negative",
        lambda t: ["rate", "--rater", "panel:seed=-1", "--pairs", "10"],
        "seed",
    ),
    Case(
        "cli",
        "rater-heron-margin-inf",
        lambda t: ["rate", "--rater", "hierarchical:margin=inf", "--pairs", "10"],
        "margins",
    ),
    Case(
        "cli",
        "sweep-seeds-negative-list",
        lambda t: ["sweep", "--env", "pendulum", "--agent", "ppo", "--seeds", "0,-1", "--out", str(t / "s")],
        "seeds",
    ),
    Case(
        "cli",
        "dataset-episodes-0",
        lambda t: ["dataset", "build", "--env", "pendulum", "--rater", "regret", "--episodes", "0"],
        "--episodes",
    ),
    # ---- env specs ---------------------------------------------------------------------------------
    Case(
        "specs",
        "weight-nan",
        lambda t: rate_env(spec_file(t, lambda d: d["factors"][0].update(weight=float("nan")))),
        "weight: must be a finite number",
    ),
    Case(
        "specs",
        "weight-text",
        lambda t: rate_env(spec_file(t, lambda d: d["factors"][0].update(weight="heavy"))),
        "weight",
    ),
    Case(
        "specs",
        "sign-half",
        lambda t: rate_env(spec_file(t, lambda d: d["factors"][0].update(sign=0.5))),
        "sign",
    ),
    Case(
        "specs",
        "threshold-nan",
        lambda t: rate_env(spec_file(t, lambda d: d["non_markovian"].update(threshold=float("nan")))),
        "threshold: must be a finite number",
    ),
    Case(
        "specs",
        "anchor-inf",
        lambda t: rate_env(spec_file(t, lambda d: d["normalisation"].update(oracle_return=float("inf")))),
        "oracle_return: must be a finite number",
    ),
    Case(
        "specs",
        "anchors-equal",
        lambda t: rate_env(
            spec_file(
                t, lambda d: d["normalisation"].update(oracle_return=d["normalisation"]["random_return"])
            )
        ),
        "equals",
    ),
    Case(
        "specs",
        "heron-margin-nan",
        lambda t: rate_env(spec_file(t, lambda d: d["heron"]["margins"].__setitem__(0, float("nan")))),
        "margins",
    ),
    Case(
        "specs",
        "criterion-weight-inf",
        lambda t: rate_env(
            spec_file(
                t,
                lambda d: d["intransitive"]["criteria"][0]["weights"].update(
                    {next(iter(d["intransitive"]["criteria"][0]["weights"])): float("inf")}
                ),
            )
        ),
        "finite",
    ),
    Case(
        "specs",
        "horizon-huge",
        lambda t: rate_env(spec_file(t, lambda d: d.update(horizon=10**12))),
        "horizon",
    ),
    Case("specs", "horizon-zero", lambda t: rate_env(spec_file(t, lambda d: d.update(horizon=0))), "horizon"),
    Case(
        "specs",
        "segment-over-horizon",
        lambda t: rate_env(spec_file(t, lambda d: d.update(segment_length=10**6))),
        "segment_length",
    ),
    Case(
        "specs",
        "unknown-key",
        lambda t: rate_env(spec_file(t, lambda d: d.update(horizn=200))),
        "did you mean",
    ),
    Case(
        "specs",
        "unknown-gym-id",
        lambda t: rate_env(spec_file(t, lambda d: d.update(gym_id="Nope-v9"))),
        "gymnasium cannot make 'Nope-v9'",
    ),
    Case(
        "specs",
        "kwarg-rejected",
        lambda t: rate_env(spec_file(t, lambda d: d.update(kwargs={"foo": 1}))),
        "rejects its kwargs",
    ),
    Case(
        "specs",
        "kwarg-key-not-text",
        lambda t: rate_env(spec_file(t, lambda d: d.update(kwargs={1: 2}))),
        "kwargs key",
    ),
    Case(
        "specs",
        "duplicate-key",
        lambda t: rate_env(
            text_file(t, "dup.yaml", (ENV_DIR / "pendulum.yaml").read_text() + "\nhorizon: 100\n")
        ),
        "duplicate key 'horizon' on line",
    ),
    Case("specs", "folder", lambda t: rate_env(str(t)), "is a directory"),
    Case(
        "specs",
        "folder-with-yaml-suffix",
        lambda t: rate_env(str((t / "x.yaml").mkdir() or t / "x.yaml")),
        "is a directory",
    ),
    Case(
        "specs",
        "not-utf8",
        lambda t: rate_env(text_file(t, "bin.yaml", b"\xff\xfe\x00garbage")),
        "not a text file",
    ),
    Case("specs", "top-level-list", lambda t: rate_env(text_file(t, "list.yaml", "- 1\n- 2\n")), "mapping"),
    Case("specs", "gym-kwarg-rejected", lambda t: rate_env("gym:Pendulum-v1,foo=1"), "rejects its kwargs"),
    Case("specs", "gym-unknown", lambda t: rate_env("gym:Nope-v0"), "no gymnasium env"),
    # ---- damaged artefacts ---------------------------------------------------------------------------
    Case(
        "artefacts",
        "report-strict-empty-csv",
        lambda t: ["report", sweep_with(t, csv=""), "--strict", "--reps", "10"],
        "progress.csv is empty",
    ),
    Case(
        "artefacts",
        "report-strict-broken-config",
        lambda t: ["report", sweep_with(t, config="env: [pendulum\n"), "--strict", "--reps", "10"],
        "config.yaml is not valid YAML",
    ),
    Case(
        "artefacts",
        "plot-strict-ragged-line",
        lambda t: [
            "plot",
            sweep_with(t, csv="env_steps,true_return_mean\n0,-900\n500,-800,7\n"),
            "--strict",
            "--reps",
            "10",
        ],
        "line 3: 3 fields, expected 2",
    ),
    Case(
        "artefacts",
        "plot-strict-no-return-column",
        lambda t: ["plot", sweep_with(t, csv="env_steps,score\n0,1\n"), "--strict"],
        "no column true_return_mean",
    ),
    Case(
        "artefacts",
        "dataset-not-npz",
        lambda t: [
            "dataset",
            "export",
            text_file(t, "d.npz", b"PK\x03\x04broken"),
            "--format",
            "minari",
            "--id",
            "x/y-v0",
        ],
        "d.npz",
    ),
    Case(
        "artefacts",
        "render-run-without-policy",
        lambda t: ["render", "--run", str(fake_run(t / "runs"))],
        "seed0",
    ),
    # ---- faults and resources --------------------------------------------------------------------------
    Case(
        "resources",
        "sweep-seeds-huge",
        lambda t: [
            "sweep",
            "--env",
            "pendulum",
            "--agent",
            "ppo",
            "--seeds",
            "1000000",
            "--out",
            str(t / "s"),
        ],
        "largest sweep",
    ),
    Case(
        "resources",
        "sweep-grid-huge",
        lambda t: [
            "sweep",
            "--env",
            "pendulum",
            "--agent",
            "ppo,rm_ppo",
            "--rater",
            ",".join(f"mistake:eps=0.{i}" for i in range(1, 10)),
            "--seeds",
            "600",
            "--out",
            str(t / "s"),
        ],
        "the grid has up to",
    ),
    Case(
        "resources",
        "rate-pairs-over-bound",
        lambda t: ["rate", "--rater", "partial_return", "--pairs", str(10**11)],
        "--pairs",
    ),
    Case(
        "resources",
        "panel-members-huge",
        lambda t: ["rate", "--rater", "panel:num_members=100000000000", "--pairs", "10"],
        "num_members",
    ),
    Case(
        "resources",
        "panel-spread-overflows",
        lambda t: ["rate", "--rater", "panel:spread=1e308", "--pairs", "10"],
        "spread",
    ),
    Case(
        "resources",
        "render-width-huge",
        lambda t: ["render", "--env", "pendulum", "--pair", "--width", "100000"],
        "--width",
    ),
    # ---- security --------------------------------------------------------------------------------------
    Case(
        "security",
        "yaml-python-tag",
        lambda t: rate_env(text_file(t, "tag.yaml", "!!python/object/apply:os.system ['touch pwned']\n")),
        "invalid YAML",
    ),
    Case(
        "security",
        "duplicate-key-override",
        lambda t: rate_env(
            text_file(
                t,
                "dup2.yaml",
                (ENV_DIR / "pendulum.yaml").read_text().replace("kwargs:", "kwargs: {}\nkwargs:", 1),
            )
        ),
        "duplicate key 'kwargs'",
    ),
]


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Runs start in ``tmp_path`` and must never reach training."""

    def refuse(*args, **kwargs):
        raise AssertionError("validation let a bad input through to training")

    monkeypatch.setattr(prefrl.experiment, "_train", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(argv: list[str]) -> int:
    """``prefrl argv`` in-process; argparse's exit is returned as its status."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"prefrl [\w ]+: error: ", line)]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category}:{c.name}" for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case: Case, no_training, capsys):
    argv = case.argv(no_training)
    capsys.readouterr()
    status = run_cli(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert status == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and err.rstrip().splitlines()[-1] == lines[0], err
    assert re.search(case.expect, lines[0]), lines[0]
    if ": error: argument " not in lines[0]:
        # not argparse's: no usage line either, the error is all there is (warnings aside)
        assert [line for line in err.splitlines() if "warning" not in line] == lines


def test_categories_cover_the_issue():
    counts = {}
    for case in CASES:
        counts[case.category] = counts.get(case.category, 0) + 1
    assert set(counts) == {"cli", "specs", "artefacts", "resources", "security"}
    assert len(CASES) >= 60


def test_sweep_refuses_before_writing_sweep_json(no_training, capsys):
    out = no_training / "big"
    assert (
        run_cli(["sweep", "--env", "pendulum", "--agent", "ppo", "--seeds", "1000000", "--out", str(out)])
        == 2
    )
    assert not (out / "sweep.json").exists()


# --------------------------------------------------------------------------------------------------
# YAML and number checks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [("a: 1\nb: 2\na: 3\n", "a", 3), ("x:\n  y: 1\n  z: 2\n  y: 3\n", "y", 4), ("{p: 1, p: 2}\n", "p", 1)],
)
def test_duplicate_keys_name_key_and_line(tmp_path, text, key, line):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=rf"dup.yaml: duplicate key '{key}' on line {line}"):
        spec_utils.load_yaml(path)


def test_merge_keys_may_be_overridden():
    data = spec_utils.yaml_load("base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  y: 5\n")
    assert data["mine"] == {"x": 1, "y": 5}


def test_every_shipped_yaml_has_unique_keys():
    for folder in (ENV_DIR, config.AGENTS_DIR):
        for path in folder.glob("*.yaml"):
            spec_utils.load_yaml(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 10**400])
def test_check_type_refuses_non_finite_floats(value):
    with pytest.raises(SpecError, match="finite"):
        spec_utils.check_type(value, float, "k")
    assert spec_utils.check_type(float("inf"), float, "k", finite=False) == float("inf")


@pytest.mark.parametrize(
    ("value", "args", "ok"),
    [
        (0.0, (0, 1, True), False),
        (1.0, (0, 1, True), True),
        (1.5, (0, 1), False),
        (float("nan"), (0, None), False),
        (0.0, (0, None), True),
        (-1e-9, (0, None), False),
        (5.0, (None, 5.0, False, True), False),
    ],
)
def test_check_range(value, args, ok):
    if ok:
        assert spec_utils.check_range(value, "k", *args) == value
    else:
        with pytest.raises(SpecError, match="k: must lie in"):
            spec_utils.check_range(value, "k", *args)


def test_check_memory_names_the_figures(monkeypatch):
    monkeypatch.setattr(spec_utils, "machine_memory", lambda: 8 * 10**9)
    spec_utils.check_memory(3.9e9, "--pairs 1")  # under half: fine
    with pytest.raises(ConfigError, match=r"--pairs 9 needs ~24 GB of memory, this machine has 8 GB"):
        spec_utils.check_memory(24e9, "--pairs 9")


def test_query_budget_memory_is_checked(monkeypatch, pendulum):
    monkeypatch.setattr(spec_utils, "machine_memory", lambda: 8 * 10**9)
    config.check_budgets(pendulum, 1000, 10_000)
    with pytest.raises(
        ConfigError,
        match=r"--queries 100,000,000,000 \(pendulum, segments of 50 steps\) needs ~160 TB of memory, "
        r"this machine has 8 GB",
    ):
        config.check_budgets(pendulum, 1000, 10**11)


@pytest.mark.parametrize(
    ("ppo", "match"),
    [
        ({"gamma": 0}, "gamma"),
        ({"gamma": 1.0}, None),
        ({"clip_range": "lin_0.2"}, None),
        ({"clip_range": 0}, "clip_range"),
        ({"learning_rate": "lin_3e-4_1e-5"}, None),
        ({"learning_rate": "lin_x"}, "learning_rate"),
        ({"max_grad_norm": 0}, "max_grad_norm"),
        ({"target_kl": None}, None),
        ({"target_kl": -1}, "target_kl"),
        ({"n_steps": 4, "batch_size": 64}, "exceeds the rollout"),
        ({"vf_coef": float("inf")}, "finite"),
        ({"n_epochs": True}, "n_epochs"),
    ],
)
def test_ppo_ranges(ppo, match):
    if match is None:
        config.validate_ppo(ppo, "ppo")
    else:
        with pytest.raises(ConfigError, match=match):
            config.validate_ppo(ppo, "ppo")


def test_typed_sections_check_their_ranges():
    with pytest.raises(SpecError, match=r"offline.action_eps: must lie in \(0, 1\)"):
        config.load_agent_config("cpl", "pendulum", {"offline": {"action_eps": 1.0}})
    with pytest.raises(SpecError, match=r"reward_model\.net_arch"):
        config.load_agent_config("rm_ppo", "pendulum", {"reward_model": {"net_arch": [64, 0]}})
    with pytest.raises(SpecError, match="finite"):
        config.load_agent_config("spo", "pendulum", {"ppo": {"gamma": float("nan")}})


def test_spec_error_names_the_file_for_gym_failures(tmp_path):
    spec = load_env_spec(spec_file(tmp_path, lambda d: d.update(kwargs={"gravity": 1}), "heavy"))
    with pytest.raises(SpecError, match=r"heavy.yaml: .*kwargs"):
        spec.observation_space  # noqa: B018 (the first gym.make of the spec)


# --------------------------------------------------------------------------------------------------
# Manifests without skill levels
# --------------------------------------------------------------------------------------------------


def test_manifest_without_levels_key_is_refused(tmp_path, monkeypatch, pendulum):
    monkeypatch.setenv("PREFRL_ORACLE_DIR", user_oracle(tmp_path, lambda m: m.pop("levels")))
    with pytest.raises(OracleError, match="no 'levels' list"):
        loading.read_manifest(pendulum, tmp_path / "oracles" / "pendulum")


def test_oracle_without_levels_builds_no_dataset(tmp_path, monkeypatch, pendulum):
    monkeypatch.setenv("PREFRL_ORACLE_DIR", user_oracle(tmp_path, lambda m: m.update(levels=[])))
    with pytest.raises(DatasetError, match="no skill levels"):
        build_dataset("pendulum", "partial_return", episodes=12, segment=20, pairs=10, out=tmp_path / "d.npz")
    with pytest.raises(OracleError, match="needs the oracle's skill levels"):
        diagnostics.rate_report("pendulum", "partial_return", num_pairs=10, policy="mixed")


# --------------------------------------------------------------------------------------------------
# Nothing dropped silently: the run scan
# --------------------------------------------------------------------------------------------------


GOOD_CSV = "env_steps,true_return_mean\n0,-900\n500,-800\n1000,-700\n"


@pytest.mark.parametrize(
    ("csv", "config_text", "kind", "reason"),
    [
        ("", None, "damaged", "progress.csv is empty"),
        ("env_steps,true_return_mean\n", None, "damaged", "finished but progress.csv has no evaluation"),
        ("steps,return\n1,2\n", None, "damaged", "no column env_steps, true_return_mean"),
        (GOOD_CSV, "env: [x\n", "damaged", "config.yaml is not valid YAML"),
        (GOOD_CSV, "- a\n- b\n", "damaged", "config.yaml is not a mapping"),
        (GOOD_CSV, "seed: zero\n", "damaged", "seed is not an integer"),
        (GOOD_CSV, "a: 1\na: 2\n", "damaged", "duplicate key 'a'"),
        (GOOD_CSV + "1500,-600,3\n", None, "partial", "line 5: 3 fields, expected 2"),
        (GOOD_CSV + "1500,abc\n", None, "partial", "line 5: true_return_mean is not a number"),
    ],
)
def test_scan_lists_every_damaged_run(tmp_path, csv, config_text, kind, reason):
    root = tmp_path / "sweep"
    fake_run(root, "seed0")
    bad = fake_run(root, "seed1", csv=csv, config_text=config_text)
    scan = analysis.scan_runs(root, only_done=True)
    assert [(s.run_dir, s.kind) for s in scan.skipped] == [(str(bad), kind)]
    assert reason in scan.skipped[0].reason
    kept = set(scan.table["run_dir"])
    assert (str(bad) in kept) == (kind == "partial")  # a ragged line costs the line, not the run
    if kind == "partial":
        assert scan.table[scan.table["run_dir"] == str(bad)]["env_steps"].tolist() == [0, 500, 1000]
    assert analysis.load_runs(root).attrs["skipped"][0]["reason"] == scan.skipped[0].reason
    with pytest.raises(RunDirError, match=re.escape(str(bad))):
        analysis.load_runs(root, strict=True)


def test_unfinished_runs_are_listed_but_not_errors(tmp_path):
    root = tmp_path / "sweep"
    fake_run(root, "seed0")
    (fake_run(root, "seed1") / "done").unlink()
    started = root / "pendulum" / "ppo" / "none" / "seed2"
    started.mkdir()
    (started / "config.yaml").write_text("seed: 2\n")
    (started / "meta.json").write_text("{}")
    scan = analysis.scan_runs(root, only_done=True, strict=True)
    assert sorted((Path(s.run_dir).name, s.kind) for s in scan.skipped) == [
        ("seed1", "unfinished"),
        ("seed2", "unfinished"),
    ]
    assert set(scan.table["seed"]) == {0}
    assert set(analysis.scan_runs(root).table["seed"]) == {0, 1}


def test_report_lists_skipped_runs(tmp_path, capsys):
    root = sweep_with(tmp_path, csv="")
    assert run_cli(["report", root, "--reps", "20"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"prefrl report: warning: skipped .*seed1: progress.csv is empty", captured.err)
    text = (Path(root) / "report.md").read_text()
    section = text.split("## Skipped runs", 1)[1].split("## ", 1)[0]
    assert "seed1" in section and "progress.csv is empty" in section and "damaged" in section


def test_report_says_when_nothing_was_skipped(tmp_path):
    root = tmp_path / "sweep"
    fake_run(root, "seed0")
    path = run_report(root)
    assert "every run directory found was read in full" in path.read_text()


def run_report(root: Path) -> Path:
    return write_report(root, reps=10, rater_diagnostics=False)


def test_plot_lists_partly_read_runs(tmp_path, capsys):
    root = sweep_with(tmp_path, csv=GOOD_CSV + "1500,-600,3\n")
    assert run_cli(["plot", root, "--reps", "10", "--out", str(tmp_path / "figs")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: read in part .*seed1: progress.csv: left out line 5", err)


def test_final_evaluation_of_a_damaged_run_is_one_error(tmp_path):
    run_dir = fake_run(tmp_path, csv="")
    with pytest.raises(RunDirError, match=r"progress\.csv is empty"):
        analysis.final_evaluation(run_dir)


# --------------------------------------------------------------------------------------------------
# Streaming: render and rate
# --------------------------------------------------------------------------------------------------


def test_video_is_streamed_and_complete(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8) for _ in range(4)]
    frames += [np.full((24, 32, 3), c, dtype=np.uint8) for c in (0, 90, 255)]
    produced = []

    def lazily():
        for frame in frames:
            produced.append(1)
            yield frame

    path = render.write_video(lazily(), tmp_path / "v.gif", fps=10)
    back = iio.imread(path, index=None)
    assert back.shape == (7, 24, 32, 3) and len(produced) == 7
    np.testing.assert_array_equal(back[4:], np.stack(frames[4:]))  # flat colours survive the palette exactly
    assert iio.immeta(path)["duration"] == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif"]  # no partial file left


def test_error_mid_way_removes_the_partial_file(tmp_path):
    old = tmp_path / "v.gif"
    old.write_bytes(b"an older video")

    def failing():
        yield np.zeros((8, 8, 3), dtype=np.uint8)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render.write_video(failing(), old, fps=5)
    assert old.read_bytes() == b"an older video"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif"]
    with pytest.raises(ValueError, match="no frames"):
        render.write_video([], tmp_path / "empty.gif")
    assert not (tmp_path / "empty.gif").exists()


def test_render_pair_fault_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(render, "_caption", broken)
    with pytest.raises(RuntimeError, match="broke"):
        render.render_pair("pendulum", "partial_return", tmp_path / "pair.gif", segment_length=3, fps=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "raters",
    [
        [
            "partial_return",
            "regret",
            "hierarchical",
            "intransitive",
            "non_markovian",
            "skip",
            "equal",
            "myopic",
        ]
    ],
)
def test_rate_chunks_give_the_unchunked_report(raters):
    # deterministic raters: the same pairs (one stream) and the same labels whatever the chunking
    def report(chunk):
        result = diagnostics.rate_report(
            "pendulum", raters, num_pairs=500, num_segments=40, seed=5, repeats=1, chunk_pairs=chunk
        )
        return [{k: v for k, v in row.items() if k != "pairs_per_s"} for row in result["raters"]]

    unchunked = report(10_000)
    assert report(7) == unchunked and report(128) == unchunked
    assert unchunked[0]["queries"] == 500 and unchunked[0]["agreement"] == 1.0


def test_rate_noisy_raters_are_reproducible_per_seed():
    def report(seed):
        result = diagnostics.rate_report(
            "pendulum",
            ["mistake:eps=0.3", "stoc"],
            num_pairs=300,
            num_segments=30,
            seed=seed,
            repeats=1,
            chunk_pairs=64,
        )
        return [(r["tie_share"], r["agreement"], r["queries"]) for r in result["raters"]]

    assert report(1) == report(1)
    assert report(1) != report(2)
    mistake_agreement = report(1)[0][1]
    assert 0.55 < mistake_agreement < 0.85  # eps 0.3 flips about 30% of the strict labels


def test_rate_memory_is_bounded_by_the_chunk(monkeypatch):
    # 3 chunks of 50 pairs: no array of the rater ever holds more than a chunk
    sizes = []
    original = diagnostics._draw_pairs

    def spy(num_segments, count, stream):
        sizes.append(count)
        return original(num_segments, count, stream)

    monkeypatch.setattr(diagnostics, "_draw_pairs", spy)
    diagnostics.rate_report(
        "pendulum", "partial_return", num_pairs=120, num_segments=20, repeats=1, chunk_pairs=50
    )
    assert sizes == [50, 50, 20]


def test_rate_segment_memory_is_checked(monkeypatch):
    monkeypatch.setattr(spec_utils, "machine_memory", lambda: 2 * 10**9)
    with pytest.raises(
        ConfigError, match=r"1,000,000 segments of 50 steps needs ~\d.* GB of memory, this machine has 2 GB"
    ):
        diagnostics.rate_report("pendulum", "partial_return", num_pairs=10, num_segments=10**6)


def test_render_checks_sizes_before_anything(tmp_path):
    for kwargs, match in (({"width": 0}, "width"), ({"fps": 0}, "fps"), ({"segment_length": 201}, "horizon")):
        with pytest.raises(ConfigError, match=match):
            render.render_pair("pendulum", "partial_return", tmp_path / "p.gif", **kwargs)
    assert list(tmp_path.iterdir()) == []
