"""Load run directories into tidy pandas tables and aggregate them.

A run directory (see :mod:`prefrl.experiment`) holds ``config.yaml`` and ``progress.csv``. :func:`load_runs`
turns any set of them into one long table, one row per evaluation::

    env, agent, rater, seed, env_steps, queries, wall_s, true_return_mean, true_return_std,
    normalised_score, done, run_dir, ...agent-specific columns

so studies can be analysed from Python without knowing the directory layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ID_COLUMNS = ["env", "agent", "rater", "seed"]


def find_run_dirs(roots: Iterable[str | Path]) -> list[Path]:
    """Every directory under ``roots`` (or a root itself) that holds a ``progress.csv``."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if (root / "progress.csv").is_file():
            found.add(root)
        found.update(p.parent for p in root.rglob("progress.csv"))
    return sorted(found)


def _read_progress(path: Path) -> pd.DataFrame | None:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    return frame if len(frame) else None


def load_run(run_dir: str | Path) -> pd.DataFrame | None:
    """One run's progress.csv with its identifying columns; ``None`` if it has no evaluation yet."""
    run_dir = Path(run_dir)
    frame = _read_progress(run_dir / "progress.csv")
    if frame is None:
        return None
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    config = config or {}
    frame = frame.copy()
    frame.insert(0, "env", config.get("env", run_dir.parts[-4] if len(run_dir.parts) >= 4 else "?"))
    frame.insert(1, "agent", config.get("agent", "?"))
    frame.insert(2, "rater", str(config.get("rater") or "none"))
    frame.insert(3, "seed", int(config.get("seed", -1)))
    frame["done"] = (run_dir / "done").exists()
    frame["run_dir"] = str(run_dir)
    return frame


def load_runs(roots: Iterable[str | Path] | str | Path, only_done: bool = False) -> pd.DataFrame:
    """Read every run directory under ``roots`` into one tidy table (one row per evaluation)."""
    if isinstance(roots, str | Path):
        roots = [roots]
    frames = [f for d in find_run_dirs(roots) if (f := load_run(d)) is not None]
    if not frames:
        return pd.DataFrame(columns=[*ID_COLUMNS, "env_steps", "true_return_mean"])
    table = pd.concat(frames, ignore_index=True, sort=False)
    if only_done:
        table = table[table["done"]]
    return table.sort_values([*ID_COLUMNS, "env_steps"]).reset_index(drop=True)


def final_scores(table: pd.DataFrame, metric: str = "true_return_mean") -> pd.DataFrame:
    """The last evaluation of each run: one row per (env, agent, rater, seed)."""
    last = table.sort_values("env_steps").groupby(ID_COLUMNS, as_index=False).tail(1)
    return last.sort_values(ID_COLUMNS).reset_index(drop=True)


def iqm(values: np.ndarray) -> float:
    """Interquartile mean over runs (rliable's ``aggregate_iqm``); NaN for no runs."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan")
    from rliable import metrics

    return float(metrics.aggregate_iqm(values.reshape(-1, 1)))


def summary_table(table: pd.DataFrame, metric: str = "true_return_mean") -> pd.DataFrame:
    """Per (env, agent, rater): seeds, final metric mean / std / median / IQM, queries and wall time."""
    last = final_scores(table, metric)
    grouped = last.groupby(["env", "agent", "rater"])
    summary = grouped[metric].agg(seeds="count", mean="mean", std="std", median="median")
    summary["iqm"] = grouped[metric].apply(lambda s: iqm(s.to_numpy()))
    for column in ("normalised_score", "env_steps", "queries", "wall_s"):
        if column in last and column != metric:
            summary[f"{column}"] = grouped[column].mean()
    return summary.reset_index()
