"""Property-based tests (hypothesis): generated specs and command-line values never cause a traceback.

Every generated input must either work or stop with exit status 2 (or a :class:`PrefrlError` from the
library) and exactly one error line; an exit status 1 (a traceback, "this is a bug in prefrl") fails the
test and hypothesis shrinks the input that caused it. Nothing trains: ``prefrl run`` is cut after its
validation (:func:`prefrl.experiment.resolve_run`), and valid ``rate``/``render``/``report`` calls are kept
small. No example database is written (``database=None``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from prefrl import cli
from prefrl.analysis import FinalEvaluation
from prefrl.cli import run as cli_run
from prefrl.envs import ENV_DIR, EnvSpec, load_env_spec_file
from prefrl.errors import PrefrlError
from prefrl.experiment import resolve_run

PENDULUM = yaml.safe_load((ENV_DIR / "pendulum.yaml").read_text())

#: values a mutation puts in place of a spec value
ODD_VALUES = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        -1,
        0,
        1,
        -0.5,
        0.5,
        1.5,
        10**12,
        1e308,
        -1e308,
        "x",
        "",
        [1, "a"],
        [],
        {"k": 1},
        {},
        None,
        True,
        False,
        "info:nope",
        "computed:nope",
        "reward",
        "Pendulum-v1",
        "Nope-v0",
    ]
)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a nested mapping/list (the places a mutation can touch)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def parent(data: Any, path: tuple) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


#: plausible numbers: most leave the spec valid, so valid specs get exercised too
NEAR_VALUES = st.sampled_from([0.5, 2, 3.0, 0, -1, 100, 10**6, 10**6 + 1, math.nan, math.inf])


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict:
    """The pendulum spec with 1-3 random mutations: a number nudged, a value replaced by an odd one, a key
    removed, or a key added."""
    data = copy.deepcopy(PENDULUM)
    for _ in range(draw(st.integers(1, 3))):
        places = paths(data)
        if not places:
            break
        path = draw(st.sampled_from(places))
        container = parent(data, path)
        action = draw(st.sampled_from(["nudge", "nudge", "replace", "remove", "add"]))
        if action == "nudge":
            numbers = [p for p in places if isinstance(parent(data, p)[p[-1]], int | float)]
            if numbers:
                place = draw(st.sampled_from(numbers))
                parent(data, place)[place[-1]] = draw(NEAR_VALUES)
        elif action == "replace":
            container[path[-1]] = copy.deepcopy(draw(ODD_VALUES))  # never share a list between examples
        elif action == "remove":
            del container[path[-1]]
        elif isinstance(container, dict):
            key = draw(st.sampled_from(["extra", "horizn", "weigth", "kwargs", "oracle"]))
            container[key] = copy.deepcopy(draw(ODD_VALUES))
    return data


def finite_numbers(spec: EnvSpec) -> list[float]:
    """Every number of a loaded spec that raters and scores compute with."""
    numbers = [*spec.factor_weights, *spec.factor_signs, *spec.heron_margins]
    numbers += [w for c in spec.criteria for w in c.weights.values()]
    numbers += [
        v
        for v in (spec.random_return, spec.oracle_return, spec.non_markovian.get("threshold"))
        if v is not None
    ]
    return numbers


@SETTINGS
@given(data=mutated_specs())
def test_mutated_specs_load_or_fail_with_one_line(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("spec") / "mutant.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        spec = load_env_spec_file(path, notice=False)
        spec.observation_space  # noqa: B018 (builds and steps the env once)
    except PrefrlError as e:
        event("refused")
        assert "\n" not in str(e) and str(path) in str(e), str(e)
        return
    event("accepted")
    # accepted: then every number the raters use is finite and the sizes are within their bounds
    assert all(np.isfinite(x) for x in finite_numbers(spec))
    assert 1 <= spec.segment_length <= spec.horizon <= 1_000_000


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    capsys.readouterr()
    try:
        status = cli.main(argv)
    except SystemExit as e:
        status = int(e.code or 0)
    return status, capsys.readouterr().err


def assert_ok_or_one_line(status: int, err: str) -> None:
    """Exit 0, or exit 2 with exactly one ``prefrl ...: error:`` line, the last one; never a traceback."""
    event(f"exit {status}")  # hypothesis --hypothesis-show-statistics shows the mix
    assert "Traceback" not in err and status != 1, err
    assert status in (0, 2), err
    if status == 2:
        errors = [line for line in err.splitlines() if re.match(r"prefrl[\w ]*: error: ", line)]
        assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err


@SETTINGS
@given(data=mutated_specs())
def test_rate_on_mutated_specs(tmp_path_factory, capsys, data):
    folder = tmp_path_factory.mktemp("rate")
    path = folder / "mutant.yaml"
    path.write_text(yaml.safe_dump(data))
    status, err = run_cli(["rate", "--env", str(path), "--rater", "partial_return", "--pairs", "20"], capsys)
    assert_ok_or_one_line(status, err)


NUMBER_TEXT = st.one_of(
    st.integers(-5, 400).map(str),
    st.sampled_from(
        ["0", "-1", "1e9", "nan", "inf", "abc", "", "10000000000000", "99999999999999999999", "1_0", " 7"]
    ),
)
RATER_PARAMS = {
    "partial_return": ["beta", "discount"],
    "regret": ["gamma", "beta"],
    "non_markovian": ["threshold", "beta"],
    "hierarchical": ["margin"],
    "panel": ["num_members", "spread", "seed"],
    "mistake": ["eps"],
    "skip": ["eps", "margin", "threshold"],
    "equal": ["eps", "margin"],
    "myopic": ["gamma"],
    "stoc": ["beta"],
}
PARAM_TEXT = st.sampled_from(
    ["nan", "inf", "-inf", "-1", "0", "0.5", "1", "2", "1e308", "1e400", "x", "true", "3"]
)


@st.composite
def rater_specs(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(RATER_PARAMS)))
    keys = draw(st.lists(st.sampled_from([*RATER_PARAMS[name], "bogus"]), max_size=2, unique=True))
    params = ",".join(f"{k}={draw(PARAM_TEXT)}" for k in keys)
    return f"{name}:{params}" if params else name


@SETTINGS
@given(pairs=NUMBER_TEXT, seed=NUMBER_TEXT, rater=rater_specs())
@example(pairs="30", seed="1", rater="mistake:eps=0.5")  # a valid call is always among the examples
def test_rate_command_values(capsys, pairs, seed, rater):
    status, err = run_cli(["rate", "--rater", rater, "--pairs", pairs, "--seed", seed], capsys)
    assert_ok_or_one_line(status, err)


SET_KEYS = st.sampled_from(
    [
        "ppo.gamma",
        "ppo.gae_lambda",
        "ppo.clip_range",
        "ppo.learning_rate",
        "ppo.n_steps",
        "ppo.batch_size",
        "ppo.n_epochs",
        "ppo.ent_coef",
        "ppo.vf_coef",
        "ppo.max_grad_norm",
        "ppo.target_kl",
        "ppo.bogus",
        "n_envs",
        "eval_freq",
        "total_steps",
        "policy_kwargs.net_arch",
        "policy_kwargs.activation_fn",
        "normalize",
        "normalize.gamma",
        "reward_model.learning_rate",
        "feedback.initial_query_share",
        "ppo",
        "a..b",
        ".x",
    ]
)
SET_VALUES = st.sampled_from(
    [
        "0.99",
        "1.5",
        "-0.2",
        "nan",
        "inf",
        "0",
        "1",
        "64",
        "lin_3e-4",
        "lin_-1",
        "lin_x_y",
        "[64, 64]",
        "[0]",
        "{pi: [8]}",
        "relu",
        "bogus",
        "true",
        "[1",
        "{a: 1, a: 2}",
        "",
        "1e400",
        "null",
    ]
)


@pytest.fixture
def validate_only(monkeypatch, tmp_path):
    """``prefrl run`` validates its inputs (resolve_run) and stops there, as if it had trained."""

    def fake_run_experiment(
        env,
        agent,
        rater,
        seed,
        steps=None,
        queries=None,
        out=None,
        overrides=None,
        eval_freq=None,
        n_eval_episodes=None,
        **kwargs,
    ):
        resolve_run(env, agent, rater, seed, steps, queries, overrides, eval_freq, n_eval_episodes)
        return tmp_path

    final = FinalEvaluation(0.0, 0.0, math.nan, 1, 0, "env steps", 0)
    monkeypatch.setattr(cli_run, "run_experiment", fake_run_experiment)
    monkeypatch.setattr(cli_run, "final_evaluation", lambda run_dir: final)
    monkeypatch.chdir(tmp_path)


@SETTINGS
@given(
    agent=st.sampled_from(["ppo", "rm_ppo", "spo", "cpl"]),
    steps=NUMBER_TEXT,
    queries=NUMBER_TEXT,
    sets=st.lists(st.tuples(SET_KEYS, SET_VALUES), max_size=3),
)
@example(agent="spo", steps="1000", queries="0", sets=[("ppo.gamma", "0.99")])
def test_run_command_values(validate_only, capsys, agent, steps, queries, sets):
    argv = ["run", "--agent", agent, "--rater", "partial_return", "--steps", steps, "--queries", queries]
    for key, value in sets:
        argv += ["--set", f"{key}={value}"]
    status, err = run_cli(argv, capsys)
    assert_ok_or_one_line(status, err)


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory) -> Path:
    """Two finished fake runs (no rater: the report needs no rater diagnostics)."""
    root = tmp_path_factory.mktemp("sweep")
    for seed in range(2):
        run_dir = root / "pendulum" / "ppo" / "none" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        rows = "".join(f"{s},{-900 + s / 10 + seed}\n" for s in (0, 500, 1000))
        (run_dir / "progress.csv").write_text("env_steps,true_return_mean\n" + rows)
        (run_dir / "config.yaml").write_text(
            yaml.safe_dump({"env": "pendulum", "agent": "ppo", "seed": seed})
        )
        (run_dir / "meta.json").write_text(json.dumps({}))
        (run_dir / "done").write_text("x\n")
    return root


@settings(SETTINGS, max_examples=12)
@given(reps=st.one_of(st.integers(-3, 4).map(str), st.sampled_from(["abc", "1e3", "2000000", "", "-0"])))
@example(reps="3")
def test_report_reps(small_sweep, capsys, reps):
    out = small_sweep / "out" / "report.md"
    status, err = run_cli(["report", str(small_sweep), "--reps", reps, "--out", str(out)], capsys)
    assert_ok_or_one_line(status, err)
    assert (status == 0) == out.is_file()
    with contextlib.suppress(FileNotFoundError):
        out.unlink()


@settings(SETTINGS, max_examples=15)
@given(
    width=st.one_of(st.integers(-2, 48).map(str), st.sampled_from(["0", "100000", "x", "1e2", "8193"])),
    fps=st.sampled_from(["1", "5", "2", "0", "-3", "1001"]),
)
@example(width="20", fps="5")
def test_render_width(tmp_path_factory, capsys, width, fps):
    folder = tmp_path_factory.mktemp("render")
    out = folder / "pair.gif"
    argv = [
        "render",
        "--env",
        "pendulum",
        "--pair",
        "--segment-length",
        "2",
        "--height",
        "16",
        "--width",
        width,
        "--fps",
        fps,
        "--out",
        str(out),
    ]
    status, err = run_cli(argv, capsys)
    assert_ok_or_one_line(status, err)
    # a refused size leaves no file at all, an accepted one a complete video
    assert sorted(p.name for p in folder.iterdir()) == (["pair.gif"] if status == 0 else [])
