"""Load run directories into tidy pandas tables and aggregate them.

A run directory (see :mod:`prefrl.experiment`) holds ``config.yaml`` and ``progress.csv``. :func:`load_runs`
turns any set of them into one long table, one row per evaluation::

    env, agent, rater, seed, env_steps, queries, wall_s, true_return_mean, true_return_std,
    normalised_score, done, run_dir, ...agent-specific columns

so studies can be analysed from Python without knowing the directory layout.

Nothing is dropped silently. :func:`scan_runs` returns the table and every run directory it left out or
read only in part, with the reason (:class:`SkippedRun`: an empty or unparseable ``progress.csv``, a
broken ``config.yaml``, a ragged line, a run without evaluations, an unfinished run); :func:`load_runs`
returns the same table with that list in ``table.attrs["skipped"]``. With ``strict=True`` a damaged run
raises :class:`~prefrl.errors.RunDirError` instead.

A ragged line of ``progress.csv`` (a field count that differs from the header's, or a step or return that
is not a number) is left out and reported; the run's other rows are kept, because one torn line - a run
killed while appending - should not discard a finished run's whole curve.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from rliable import metrics

from prefrl.diagnostics import agreement
from prefrl.envs import EnvSpec, load_env_spec
from prefrl.errors import ConfigError, PrefrlError, RunDirError
from prefrl.final_evaluation import read_final_eval
from prefrl.raters import make_rater
from prefrl.run_dir import load_run_env_spec
from prefrl.segments import collect_segments, sample_pairs
from prefrl.spec_utils import yaml_load

__all__ = [
    "AGGREGATES",
    "BUDGET_COLUMNS",
    "FINAL_EVAL_COLUMNS",
    "ID_COLUMNS",
    "FinalEvaluation",
    "RunScan",
    "SkippedRun",
    "aggregate_groups",
    "aggregate_table",
    "algorithm_label",
    "bootstrap_ci",
    "final_evaluation",
    "final_score_summary",
    "final_scores",
    "find_run_dirs",
    "has_normalised_scores",
    "improvement_pairs",
    "improvement_probability",
    "interval_estimates",
    "iqm",
    "iqm_contrast",
    "is_offline",
    "load_run",
    "load_runs",
    "probability_of_improvement",
    "rater_agreement",
    "scan_runs",
    "score_cells",
    "score_matrices",
    "score_metric",
    "summary_table",
    "summary_with_ci",
    "upsert_rows",
]

ID_COLUMNS = ["env", "agent", "rater", "seed"]
#: columns every progress.csv row needs as numbers (a row without them is a damaged line)
_NUMERIC_COLUMNS = ("env_steps", "true_return_mean")


@dataclass(frozen=True)
class SkippedRun:
    """A run directory left out of a table, or read in part, and why.

    :param run_dir: the run directory
    :param reason: one line, e.g. ``"progress.csv is empty"`` or ``"config.yaml is not valid YAML (...)"``
    :param kind: ``"damaged"`` (its files are broken: the run is left out), ``"partial"`` (bad lines of
        progress.csv left out, the rest kept) or ``"unfinished"`` (no ``done`` marker or no evaluation yet:
        left out by choice, nothing is wrong with it)
    """

    run_dir: str
    reason: str
    kind: Literal["damaged", "partial", "unfinished"] = "damaged"

    def __str__(self) -> str:
        return f"{self.run_dir}: {self.reason}"


@dataclass
class RunScan:
    """What :func:`scan_runs` found: the tidy table and every run left out or read in part."""

    table: pd.DataFrame
    skipped: list[SkippedRun] = field(default_factory=list)

    @property
    def damaged(self) -> list[SkippedRun]:
        """The skipped runs whose files are broken (``kind`` damaged or partial)."""
        return [s for s in self.skipped if s.kind != "unfinished"]


def find_run_dirs(roots: Iterable[str | Path]) -> list[Path]:
    """Every directory under ``roots`` (or a root itself) that holds a ``progress.csv``."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if (root / "progress.csv").is_file():
            found.add(root)
        found.update(p.parent for p in root.rglob("progress.csv"))
    return sorted(found)


def _candidate_run_dirs(roots: Iterable[str | Path]) -> list[Path]:
    """Directories holding a progress.csv or a run's config.yaml (a run that never evaluated has no csv)."""
    found = set(find_run_dirs(roots))
    for root in roots:
        root = Path(root)
        configs = [root / "config.yaml", *root.rglob("config.yaml")]
        found.update(p.parent for p in configs if p.is_file() and (p.parent / "meta.json").is_file())
    return sorted(found)


class _Damaged(Exception):
    """A run directory's file cannot be used (the message says which and why)."""


def _read_progress(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The rows of a progress.csv whose field count matches the header and whose steps and returns are
    numbers; the bad lines are returned as messages (``"line 7: 3 fields, expected 12"``).

    :raises _Damaged: no such file, an empty file, no header, or no usable column
    """
    if not path.is_file():
        raise _Damaged("no progress.csv")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _Damaged(f"progress.csv cannot be read ({type(e).__name__}: {e})") from None
    if not text.strip():
        raise _Damaged("progress.csv is empty")
    lines = text.splitlines()
    try:
        rows = list(csv.reader(lines))
    except csv.Error as e:
        raise _Damaged(f"progress.csv is not a CSV file ({e})") from None
    if len(rows) != len(lines):  # a quoted field spanning lines: not what prefrl writes
        raise _Damaged("progress.csv is not one row per line")
    header = rows[0]
    missing = [c for c in _NUMERIC_COLUMNS if c not in header]
    if missing:
        raise _Damaged(f"progress.csv has no column {', '.join(missing)} (header: {','.join(header)[:80]})")
    bad: list[str] = []
    good, numbers = [lines[0]], []
    for number, (line, row) in enumerate(zip(lines[1:], rows[1:], strict=True), start=2):
        if not row:
            continue
        if len(row) != len(header):
            bad.append(f"line {number}: {len(row)} fields, expected {len(header)}")
            continue
        good.append(line)
        numbers.append(number)
    frame = pd.read_csv(io.StringIO("\n".join(good) + "\n"))
    broken = np.zeros(len(frame), dtype=bool)
    for column in _NUMERIC_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        not_number = (values.isna() & frame[column].notna()).to_numpy()
        for index in np.flatnonzero(not_number & ~broken):
            bad.append(f"line {numbers[index]}: {column} is not a number ({frame[column].iloc[index]!r})")
        broken |= not_number
        frame[column] = values
    frame = frame[~broken]
    return frame.reset_index(drop=True), bad


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml (``{}`` for runs written before it existed).

    :raises _Damaged: not valid YAML, not a mapping, or a seed that is not an integer
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        reason = " ".join(str(e).split())[:120]
        raise _Damaged(f"config.yaml is not valid YAML ({reason})") from None
    config = config or {}
    if not isinstance(config, dict):
        raise _Damaged(f"config.yaml is not a mapping (a {type(config).__name__})")
    seed = config.get("seed", -1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _Damaged(f"config.yaml: seed is not an integer ({seed!r})")
    return config


def _scan_run(run_dir: Path) -> tuple[pd.DataFrame | None, list[SkippedRun]]:
    """One run's rows and what was wrong with it (empty list: nothing)."""
    done = (run_dir / "done").exists()
    try:
        config = _read_config(run_dir)
        if not (run_dir / "progress.csv").is_file() and not done:
            return None, [SkippedRun(str(run_dir), "no evaluation yet (no progress.csv)", "unfinished")]
        frame, bad_lines = _read_progress(run_dir / "progress.csv")
    except _Damaged as e:
        return None, [SkippedRun(str(run_dir), str(e))]
    notes = []
    if bad_lines:
        shown = "; ".join(bad_lines[:3]) + (f"; and {len(bad_lines) - 3} more" if len(bad_lines) > 3 else "")
        notes.append(
            SkippedRun(str(run_dir), f"progress.csv: left out {shown} (the other rows are kept)", "partial")
        )
    if frame.empty:
        if done:
            return None, [*notes, SkippedRun(str(run_dir), "finished but progress.csv has no evaluation")]
        return None, [*notes, SkippedRun(str(run_dir), "no evaluation yet", "unfinished")]
    frame = frame.copy()
    frame.insert(0, "env", config.get("env", run_dir.parts[-4] if len(run_dir.parts) >= 4 else "?"))
    frame.insert(1, "agent", config.get("agent", "?"))
    frame.insert(2, "rater", str(config.get("rater") or "none"))
    frame.insert(3, "seed", int(config.get("seed", -1)))
    frame["done"] = done
    frame["run_dir"] = str(run_dir)
    _fill_normalised_score(frame)
    try:
        final = read_final_eval(run_dir)
    except RunDirError as e:
        final = None
        notes.append(SkippedRun(str(run_dir), f"{e} (the last progress.csv row is its score)", "partial"))
    if final is not None:
        frame["final_episodes"] = final.episodes
        frame["final_return_mean"] = final.mean
        frame["final_return_std"] = final.std
        score = final.normalised_score
        if math.isnan(score):  # the run's spec had no anchors then: the same filling as progress.csv's
            spec = _run_spec_with_anchors(frame)
            score = float(spec.normalise(final.mean)) if spec is not None else math.nan
        frame["final_normalised_score"] = score
    return frame, notes


def load_run(run_dir: str | Path, strict: bool = False) -> pd.DataFrame | None:
    """One run's progress.csv with its identifying columns; ``None`` if it has no usable evaluation.

    Bad lines of progress.csv are left out (module docstring); ``strict`` raises instead.

    :raises RunDirError: ``strict`` and the run's files are damaged
    """
    run_dir = Path(run_dir)
    frame, notes = _scan_run(run_dir)
    problems = [n for n in notes if n.kind != "unfinished"]
    if strict and problems:
        raise RunDirError(str(problems[0]))
    return frame


def _fill_normalised_score(frame: pd.DataFrame) -> None:
    """Normalise returns with the env spec's anchors when the run predates them.

    A run records ``normalised_score`` with the anchors its env spec had when it started (NaN if it had
    none); anchors recorded later in the run's own spec (or, for runs older than ``env.yaml``, in the
    spec of that name) fill those gaps here, the same formula.
    """
    scores = frame.get("normalised_score")
    if scores is not None and scores.notna().all():
        return
    spec = _run_spec_with_anchors(frame)
    if spec is None or "true_return_mean" not in frame:
        return
    filled = spec.normalise(frame["true_return_mean"].to_numpy(dtype=float))
    frame["normalised_score"] = filled if scores is None else scores.fillna(pd.Series(filled, frame.index))


def _run_spec_with_anchors(frame: pd.DataFrame) -> EnvSpec | None:
    """The env spec of the run in ``frame`` with normalisation anchors (see :func:`_anchored_spec`), or
    ``None`` when neither it nor the current spec of its name has them."""
    try:
        spec = _anchored_spec(load_run_env_spec(frame["run_dir"].iloc[0]))
    except PrefrlError:
        return None
    return spec if spec.has_normalisation else None


@dataclass(frozen=True)
class FinalEvaluation:
    """The last evaluation of one run: what ``prefrl run`` reports when it ends.

    :param true_return: mean true return of the deterministic policy
    :param true_return_std: its std over the evaluation episodes
    :param normalised_score: ``100 * (R - R_random) / (R_oracle - R_random)``; NaN when the env spec has
        no normalisation anchors
    :param episodes: deterministic episodes per evaluation (the run's ``n_eval_episodes``), ``None`` if the
        run's config does not say
    :param steps: the budget spent at that evaluation: env steps, or gradient steps for offline agents
    :param step_unit: ``"env steps"`` or ``"gradient steps"``
    :param queries: rater queries (labelled pairs for offline agents) used by then
    """

    true_return: float
    true_return_std: float
    normalised_score: float
    episodes: int | None
    steps: int
    step_unit: str
    queries: int

    @property
    def has_normalised_score(self) -> bool:
        """False when the env spec has no random/oracle returns to normalise with."""
        return not math.isnan(self.normalised_score)


def is_offline(frame: pd.DataFrame) -> pd.Series:
    """Per row: True where the run is offline, i.e. its progress.csv counts ``grad_steps``.

    Offline agents (cpl, p_iql, bc) log a constant ``env_steps`` (the dataset's size) and their progress in
    gradient steps; online agents have no ``grad_steps`` column (NaN after :func:`load_runs` concatenates).
    """
    if "grad_steps" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["grad_steps"].notna()


def final_evaluation(run_dir: str | Path) -> FinalEvaluation:
    """The last row of ``run_dir/progress.csv`` as a :class:`FinalEvaluation`.

    The normalised score is filled from the env spec's anchors when the run predates them (as
    :func:`load_run`); it stays NaN when the spec has none.

    :raises RunDirError: ``run_dir`` holds no evaluation yet
    """
    frame, notes = _scan_run(Path(run_dir))
    if frame is None:
        reason = notes[-1].reason if notes else "no rows in progress.csv"
        raise RunDirError(f"{run_dir} has no usable evaluation: {reason}")
    last = frame.iloc[-1]
    offline = bool(is_offline(frame).iloc[-1])
    try:
        run = _read_config(Path(run_dir))
    except _Damaged:
        run = {}
    inner = run.get("config")
    episodes = inner.get("n_eval_episodes") if isinstance(inner, dict) else None
    score = last.get("normalised_score", math.nan)
    return FinalEvaluation(
        true_return=float(last["true_return_mean"]),
        true_return_std=float(last.get("true_return_std", math.nan)),
        normalised_score=math.nan if pd.isna(score) else float(score),
        episodes=None if episodes is None else int(episodes),
        steps=int(last["grad_steps"] if offline else last["env_steps"]),
        step_unit="gradient steps" if offline else "env steps",
        queries=int(last.get("queries", 0)),
    )


def _anchored_spec(spec: EnvSpec) -> EnvSpec:
    """``spec``, or the current spec of its name when only that one has anchors and otherwise agrees."""
    if spec.has_normalisation:
        return spec
    try:
        current = load_env_spec(spec.name)
    except PrefrlError:
        return spec

    def unanchored(s: EnvSpec) -> dict:
        return {**s.to_dict(), "normalisation": None}

    return current if unanchored(current) == unanchored(spec) else spec


def scan_runs(
    roots: Iterable[str | Path] | str | Path, only_done: bool = False, strict: bool = False
) -> RunScan:
    """Read every run directory under ``roots``; return the table and every run left out or read in part.

    :param only_done: leave out runs without a ``done`` marker (listed as ``"unfinished"``)
    :param strict: raise instead of leaving out a damaged run (unfinished runs are never an error)
    :raises RunDirError: ``strict`` and some run is damaged: the first one and how many there are
    """
    if isinstance(roots, str | Path):
        roots = [roots]
    roots = list(roots)
    frames, skipped = [], []
    for run_dir in _candidate_run_dirs(roots):
        frame, notes = _scan_run(run_dir)
        skipped.extend(notes)
        if frame is None:
            continue
        if only_done and not bool(frame["done"].iloc[0]):
            skipped.append(SkippedRun(str(run_dir), "unfinished (no done marker)", "unfinished"))
            continue
        frames.append(frame)
    scan = RunScan(pd.DataFrame(columns=[*ID_COLUMNS, "env_steps", "true_return_mean"]), skipped)
    if strict and scan.damaged:
        more = f" (and {len(scan.damaged) - 1} more damaged runs)" if len(scan.damaged) > 1 else ""
        raise RunDirError(f"damaged run {scan.damaged[0]}{more}")
    if frames:
        table = pd.concat(frames, ignore_index=True, sort=False)
        scan.table = table.sort_values([*ID_COLUMNS, "env_steps"]).reset_index(drop=True)
    scan.table.attrs["skipped"] = [asdict(s) for s in skipped]
    return scan


def load_runs(
    roots: Iterable[str | Path] | str | Path, only_done: bool = False, strict: bool = False
) -> pd.DataFrame:
    """Read every run directory under ``roots`` into one tidy table (one row per evaluation).

    The runs left out or read in part are listed in ``table.attrs["skipped"]`` (dicts of
    :class:`SkippedRun`'s fields); :func:`scan_runs` returns them as objects.

    :raises RunDirError: ``strict`` and some run is damaged
    """
    return scan_runs(roots, only_done=only_done, strict=strict).table


#: progress.csv's score columns and the final evaluation's columns that replace them in :func:`final_scores`
FINAL_EVAL_COLUMNS = {
    "true_return_mean": "final_return_mean",
    "true_return_std": "final_return_std",
    "normalised_score": "final_normalised_score",
}


def final_scores(table: pd.DataFrame, metric: str = "true_return_mean") -> pd.DataFrame:
    """The final score of each run: one row per (env, agent, rater, seed).

    That is the run's last progress.csv row, whose return and normalised score are replaced by the run's
    end-of-run evaluation where it has one (``final_eval.json``, :mod:`prefrl.final_evaluation`: more
    episodes, held-out start states). ``score_source`` says which: ``"final_eval"`` (with
    ``final_episodes``) or ``"last_eval"``.
    """
    last = table.sort_values("env_steps").groupby(ID_COLUMNS, as_index=False).tail(1)
    last = last.sort_values(ID_COLUMNS).reset_index(drop=True)
    has_final = last["final_episodes"].notna() if "final_episodes" in last else pd.Series(False, last.index)
    for column, final_column in FINAL_EVAL_COLUMNS.items():
        if final_column in last and column in last:
            last[column] = last[column].where(~has_final, last[final_column])
    last["score_source"] = np.where(has_final, "final_eval", "last_eval")
    return last


def iqm(values: np.ndarray) -> float:
    """Interquartile mean over runs (rliable's ``aggregate_iqm``); NaN for no runs."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan")

    return float(metrics.aggregate_iqm(values.reshape(-1, 1)))


def summary_table(table: pd.DataFrame, metric: str = "true_return_mean") -> pd.DataFrame:
    """Per (env, agent, rater): seeds, final metric mean / std / median / IQM, queries and wall time."""
    last = final_scores(table, metric)
    grouped = last.groupby(["env", "agent", "rater"])
    summary = grouped[metric].agg(seeds="count", mean="mean", std="std", median="median")
    summary["iqm"] = grouped[metric].apply(lambda s: iqm(s.to_numpy()))
    for column in ("normalised_score", *BUDGET_COLUMNS):
        if column in last and column != metric:
            summary[f"{column}"] = grouped[column].mean()
    if "unbudgeted" in last:
        summary["unbudgeted"] = grouped["unbudgeted"].max().fillna(0).astype(bool)
    return summary.reset_index()


# --------------------------------------------------------------------------------------------------
# Aggregates across seeds and envs (rliable)
# --------------------------------------------------------------------------------------------------

#: the aggregate metrics reported everywhere, in order
AGGREGATES = ("IQM", "Mean")
#: budgets and costs reported beside every final score (means over seeds)
BUDGET_COLUMNS = ("env_steps", "queries", "queries_asked", "queries_answered", "wall_s")


def algorithm_label(agent: str, rater: str) -> str:
    """How an (agent, rater) pair is named in aggregates: ``"spo [regret]"``; ``"ppo"`` without a rater."""
    return agent if rater in ("none", "", None) else f"{agent} [{rater}]"


def has_normalised_scores(table: pd.DataFrame) -> bool:
    """True if every evaluation in ``table`` has a normalised score (the env specs give both anchors)."""
    return "normalised_score" in table and len(table) > 0 and bool(table["normalised_score"].notna().all())


def score_metric(table: pd.DataFrame) -> str:
    """``"normalised_score"`` when every row has one, else ``"true_return_mean"``."""
    return "normalised_score" if has_normalised_scores(table) else "true_return_mean"


def _aggregate_fn(scores: np.ndarray) -> np.ndarray:

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])


def bootstrap_ci(
    func: Callable[..., np.ndarray],
    *scores: np.ndarray,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and percentile CI of ``func(*scores)`` by stratified bootstrap over runs.

    Each score array is ``[runs, tasks, ...]``; every replicate resamples runs with replacement
    independently within each task (the stratification) and independently across arrays, which is
    rliable's ``StratifiedBootstrap`` (one array) / ``StratifiedIndependentBootstrap`` (several) with
    the percentile method. Done here rather than through ``rliable.library`` because that module needs
    ``arch`` < 8, which does not import under pandas 3 and, under pandas 2, ignores the seed it is
    given (intervals would not be reproducible); the statistics themselves (``func``) are rliable's
    metrics.

    :param func: aggregate ``(*[runs, tasks, ...]) -> array``
    :param reps: bootstrap replicates
    :param seed: seeds the resampling (same seed, same interval)
    :param confidence: interval coverage
    :returns: ``(point, interval)``; ``interval`` is ``[2 (low, high), *point.shape]``
    """
    if isinstance(reps, bool) or not isinstance(reps, int | np.integer) or reps < 1:
        raise ConfigError(f"reps (bootstrap resamples) must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}")
    arrays = [np.asarray(s, dtype=float) for s in scores]
    for a in arrays:
        if a.ndim < 2 or a.shape[0] < 1:
            raise ValueError(f"scores must be [runs >= 1, tasks, ...], got shape {a.shape}")
    rng = np.random.default_rng(seed)
    point = np.asarray(func(*arrays), dtype=float)
    samples = np.empty((reps, *point.shape))
    for r in range(reps):
        resampled = []
        for a in arrays:
            runs, tasks = a.shape[:2]
            index = rng.integers(0, runs, size=(runs, tasks)).reshape(runs, tasks, *([1] * (a.ndim - 2)))
            resampled.append(np.take_along_axis(a, index, axis=0))
        samples[r] = func(*resampled)
    tail = 50.0 * (1.0 - confidence)
    interval = np.percentile(samples, [tail, 100.0 - tail], axis=0)
    return point, interval


def score_matrices(table: pd.DataFrame, metric: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Final scores per algorithm as rliable matrices ``[runs, tasks]`` (tasks = envs, sorted).

    rliable needs the same tasks for every algorithm, so only envs that every algorithm of ``table`` ran
    on are used; each algorithm keeps its smallest per-env number of seeds (lowest seeds first) so that its
    matrix is rectangular.

    :returns: ``({algorithm: [runs, tasks]}, tasks)``
    """
    last = final_scores(table).dropna(subset=[metric])
    if last.empty:
        return {}, []
    last = last.assign(
        algorithm=[algorithm_label(a, r) for a, r in zip(last["agent"], last["rater"], strict=True)]
    )
    envs_per_algo = last.groupby("algorithm")["env"].apply(set)
    tasks = sorted(set.intersection(*envs_per_algo.tolist()))
    matrices: dict[str, np.ndarray] = {}
    for algorithm, runs in last[last["env"].isin(tasks)].groupby("algorithm", sort=True):
        columns = [runs[runs["env"] == env].sort_values("seed")[metric].to_numpy(float) for env in tasks]
        n = min(len(c) for c in columns)
        matrices[str(algorithm)] = np.stack([c[:n] for c in columns], axis=1)
    return matrices, tasks


def interval_estimates(
    scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """IQM and mean (:data:`AGGREGATES`) with 95% stratified-bootstrap CIs per algorithm.

    :param scores: ``{algorithm: [runs, tasks]}``
    :returns: ``(points {alg: [2]}, intervals {alg: [2 (low, high), 2 (metric)]})`` as rliable returns them
    """
    points, intervals = {}, {}
    for algorithm, matrix in scores.items():
        points[algorithm], intervals[algorithm] = bootstrap_ci(_aggregate_fn, matrix, reps=reps, seed=seed)
    return points, intervals


def aggregate_groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """How envs are pooled for aggregates: ``[(group name, rows, metric)]``.

    With normalised scores for every env and more than one env, all envs form one group (``"all envs"``,
    envs are rliable tasks); otherwise each env is its own group, scored on the normalised score if it has
    one, else on the true return (raw returns of different envs are never pooled).
    """
    envs = sorted(table["env"].unique())
    if len(envs) > 1 and has_normalised_scores(table):
        return [("all envs", table, "normalised_score")]
    return [(env, rows, score_metric(rows)) for env, rows in ((e, table[table["env"] == e]) for e in envs)]


def aggregate_table(table: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Final IQM and mean with 95% CIs per aggregate group (:func:`aggregate_groups`) and algorithm.

    Columns: ``group, metric, algorithm, runs, tasks, iqm, iqm_low, iqm_high, mean, mean_low, mean_high``.
    """
    rows = []
    for group, rows_table, metric in aggregate_groups(table):
        scores, tasks = score_matrices(rows_table, metric)
        if not scores:
            continue
        points, intervals = interval_estimates(scores, reps, seed)
        for algorithm, matrix in scores.items():
            point, ci = points[algorithm], intervals[algorithm]
            rows.append(
                {
                    "group": group,
                    "metric": metric,
                    "algorithm": algorithm,
                    "runs": matrix.shape[0],
                    "tasks": len(tasks),
                    "iqm": point[0],
                    "iqm_low": ci[0, 0],
                    "iqm_high": ci[1, 0],
                    "mean": point[1],
                    "mean_low": ci[0, 1],
                    "mean_high": ci[1, 1],
                }
            )
    return pd.DataFrame(rows)


def improvement_pairs(algorithms: Iterable[str], max_pairs: int = 30) -> list[tuple[str, str]]:
    """Pairs ``(X, Y)`` worth comparing: same rater, or one of them uses no rater (a reference agent).

    Comparing an agent under rater A with another under rater B mixes two effects, so such pairs are left
    out. At most ``max_pairs`` pairs, in sorted order.
    """

    def rater_of(label: str) -> str | None:
        return label[label.index("[") + 1 : -1] if label.endswith("]") and "[" in label else None

    algorithms = sorted(algorithms)
    pairs = []
    for i, x in enumerate(algorithms):
        for y in algorithms[i + 1 :]:
            rx, ry = rater_of(x), rater_of(y)
            if rx == ry or rx is None or ry is None:
                pairs.append((x, y))
    return pairs[:max_pairs]


def improvement_probability(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks: the Mann-Whitney U statistic over ``n_x * n_y`` per task.

    Same value as rliable's ``metrics.probability_of_improvement`` (ties count one half), computed by
    broadcasting instead of one scipy call per task, which matters inside a 2000-replicate bootstrap.

    :param scores_x: ``[runs_x, tasks]``
    :param scores_y: ``[runs_y, tasks]``
    """
    x, y = np.asarray(scores_x, float)[:, None, :], np.asarray(scores_y, float)[None, :, :]
    per_task = (x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))
    return float(per_task.mean())


def probability_of_improvement(
    scores: dict[str, np.ndarray],
    pairs: Iterable[tuple[str, str]] | None = None,
    reps: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """P(X > Y) (:func:`improvement_probability`, rliable's definition) with 95% bootstrap CIs.

    :param scores: ``{algorithm: [runs, tasks]}`` (same tasks; run counts may differ)
    :param pairs: ``(X, Y)`` pairs (default :func:`improvement_pairs`)
    :returns: columns ``x, y, probability, low, high`` (0.5 = no difference)
    """
    pairs = list(improvement_pairs(scores) if pairs is None else pairs)
    rows = []
    for x, y in pairs:
        point, interval = bootstrap_ci(improvement_probability, scores[x], scores[y], reps=reps, seed=seed)
        rows.append(
            {
                "x": x,
                "y": y,
                "probability": float(point),
                "low": float(interval[0]),
                "high": float(interval[1]),
            }
        )
    return pd.DataFrame(rows, columns=["x", "y", "probability", "low", "high"])


def iqm_contrast(
    weights: Iterable[float], *samples: np.ndarray, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``sum_i weights[i] * IQM(samples[i])`` with a 95% stratified-bootstrap CI (samples resampled
    independently): ``(1, -1)`` is a difference of IQMs, ``(1, -1, -1, 1)`` a difference of two drops.

    Used for questions such as "does agent A lose less than agent B when the labels get noisy?":
    ``(IQM(A, clean) - IQM(A, noisy)) - (IQM(B, clean) - IQM(B, noisy))``, whose interval excluding 0 is
    the answer; including 0, the seeds cannot tell.

    :param weights: one weight per sample
    :param samples: 1-D arrays of per-seed scores (lengths may differ)
    :returns: ``(point, low, high)``
    """
    weights = np.asarray(list(weights), dtype=float)
    if len(weights) != len(samples) or not len(samples):
        raise ValueError(f"need one weight per sample, got {len(weights)} weights and {len(samples)} samples")
    arrays = [np.asarray(s, dtype=float).reshape(-1, 1) for s in samples]

    def contrast(*resampled: np.ndarray) -> np.ndarray:
        return np.array(sum(w * metrics.aggregate_iqm(a) for w, a in zip(weights, resampled, strict=True)))

    point, interval = bootstrap_ci(contrast, *arrays, reps=reps, seed=seed)
    return float(point), float(interval[0]), float(interval[1])


def summary_with_ci(table: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (env, agent, rater): final IQM and mean over seeds with 95% bootstrap CIs, queries, wall time.

    The score is the normalised score where the env has one, else the true return (column ``metric``).
    Columns: ``env, agent, rater, metric, seeds, iqm, iqm_low, iqm_high, mean, mean_low, mean_high,
    env_steps, queries, wall_s`` (budgets and wall time are means over seeds).
    """
    last = final_scores(table)
    rows = []
    for (env, agent, rater), runs in last.groupby(["env", "agent", "rater"], sort=True):
        metric = score_metric(table[table["env"] == env])
        values = runs[metric].dropna().to_numpy(float)
        row: dict[str, object] = {"env": env, "agent": agent, "rater": rater, "metric": metric}
        row["seeds"] = len(values)
        if len(values):
            (iqm_, mean_), ci = bootstrap_ci(_aggregate_fn, values[:, None], reps=reps, seed=seed)
            row.update(iqm=iqm_, iqm_low=ci[0, 0], iqm_high=ci[1, 0], mean=mean_, mean_low=ci[0, 1],
                       mean_high=ci[1, 1])  # fmt: skip
        for column in BUDGET_COLUMNS:
            if column in runs:
                row[column] = float(runs[column].mean())
        # heron's state pairing (HERON's code) ignores the query budget: such rows must say so
        row["unbudgeted"] = bool("unbudgeted" in runs and (runs["unbudgeted"] == 1).any())
        rows.append(row)
    return pd.DataFrame(rows)


def final_score_summary(table: pd.DataFrame, reps: int = 2000, seed: int = 0) -> dict[str, float]:
    """One cell's runs (one env, agent and rater) summarised for a benchmark table.

    ``seeds``, the final normalised score's ``median`` and ``min``, its IQM and mean with 95% bootstrap CIs
    (``iqm_low`` ... ``mean_high``, :func:`summary_with_ci`), and the mean ``queries_asked`` /
    ``queries_answered`` / ``wall_s`` of the runs' last rows (NaN where a column is absent).

    :raises ValueError: the table holds more than one (env, agent, rater) cell, or none
    """
    summary = summary_with_ci(table, reps=reps, seed=seed)
    if len(summary) != 1:
        raise ValueError(f"expected the runs of one (env, agent, rater) cell, got {len(summary)} cells")
    row = summary.iloc[0]
    last = final_scores(table)
    scores = last[row["metric"]]
    result = {"seeds": int(row["seeds"]), "median": float(scores.median()), "min": float(scores.min())}
    for key in ("iqm", "iqm_low", "iqm_high", "mean", "mean_low", "mean_high"):
        result[key] = float(row.get(key, np.nan))
    for key in ("queries_asked", "queries_answered", "wall_s"):
        result[key] = float(last[key].mean()) if key in last else float("nan")
    return result


def score_cells(row: Any) -> str:
    """``"IQM [low, high] | mean [low, high]"`` of a :func:`final_score_summary` row (a dict, a Series or
    an ``itertuples`` row), one decimal: the two interval columns of a Markdown results table."""
    # a Series has a .mean method: read mappings and Series by key, tuples by attribute
    keyed = isinstance(row, Mapping | pd.Series)
    get = row.__getitem__ if keyed else lambda key: getattr(row, key)
    return " | ".join(
        f"{get(name):.1f} [{get(name + '_low'):.1f}, {get(name + '_high'):.1f}]" for name in ("iqm", "mean")
    )


def rater_agreement(
    env_spec: str,
    rater_specs: Iterable[str],
    num_pairs: int = 2000,
    num_segments: int = 200,
    policy: object = "random",
    seed: int = 0,
) -> pd.DataFrame:
    """Pairwise agreement between raters on the same pairs: ``[R, R]`` table (1 = identical labels).

    Agreement of two raters is mean ``1 - |y_a - y_b|`` over the pairs both answered (a tie against a
    strict label counts 0.5), as in :func:`prefrl.diagnostics.agreement`.
    """
    specs = list(dict.fromkeys(rater_specs))
    raters = [make_rater(s, env_spec) for s in specs]
    segments = collect_segments(env_spec, policy, num_segments, seed=seed)
    pairs = sample_pairs(segments.num_segments, num_pairs, np.random.default_rng(seed))
    labelled = [
        r.label_array(segments, pairs, np.random.default_rng([seed, i])) for i, r in enumerate(raters)
    ]
    matrix = np.full((len(specs), len(specs)), np.nan)
    for i, (yi, ai) in enumerate(labelled):
        for j, (yj, aj) in enumerate(labelled):
            both = ai & aj
            if both.any():
                matrix[i, j] = agreement(yi[both], yj[both])
    return pd.DataFrame(matrix, index=specs, columns=specs)


def upsert_rows(path: str | Path, rows: list[dict], key: str = "env") -> pd.DataFrame:
    """Write ``rows`` to the CSV at ``path``, replacing the rows with the same ``key`` and keeping the others.

    Benchmarks re-measure a few envs at a time; the table keeps one row per ``key``, sorted by it, rounded
    to 4 decimals. Returns the table written.
    """
    path = Path(path)
    table = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path)
        table = pd.concat([old[~old[key].isin(table[key])], table], ignore_index=True)
    table = table.sort_values(key).round(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table
