"""A self-contained report of a set of runs (``prefrl report DIR``) and its figures (``prefrl plot DIR``).

:func:`write_report` reads every run directory under a root (a sweep's ``--out``) and writes one page:

1. summary table: final IQM and mean over seeds with 95% stratified-bootstrap CIs per env x agent x rater,
   with env steps, queries and wall time;
2. learning curves against env steps and against rater queries (IQM over seeds, 95% CIs);
3. aggregate IQM / mean intervals and the probability of improvement between agents (rliable);
4. rater diagnostics of the raters the runs used (tie / skip / cycle rates, agreement);
5. failed and unfinished runs with their error;
6. skipped runs: every run directory left out of the tables (or read in part) and why
   (:func:`prefrl.analysis.scan_runs`: an empty or ragged ``progress.csv``, a broken ``config.yaml``, ...);
   with ``strict=True`` a damaged run stops the report instead;
7. provenance: git commits, package versions, Python and hosts from the runs' ``meta.json``.

Markdown (``fmt="md"``) links the figures, written next to it in ``figures/``; HTML (``fmt="html"``)
embeds them as base64 PNG, so the one file is the whole report.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prefrl import analysis, plots
from prefrl.atomic_files import write_atomic
from prefrl.diagnostics import rate_report
from prefrl.errors import ConfigError, RunDirError

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "make_figures", "provenance", "run_status", "skipped_runs", "write_report"]

#: report formats
FORMATS = ("md", "html")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "all"


def _curve_figures(table: pd.DataFrame, out: Path, reps: int, seed: int) -> dict[str, list[Path]]:
    figures: dict[str, list[Path]] = {}
    figures["learning_curves_steps"] = plots.plot_learning_curves(
        table, out / "learning_curves_steps", x="env_steps", y="auto", reps=reps, seed=seed
    )
    # offline runs take all their labels before learning: they have no curve against queries
    preference_runs = table[(table["rater"] != "none") & ~analysis.is_offline(table)]
    if "queries" in preference_runs and (preference_runs["queries"] > 0).any():
        figures["learning_curves_queries"] = plots.plot_learning_curves(
            preference_runs, out / "learning_curves_queries", x="queries", y="auto", reps=reps, seed=seed
        )
    return figures


def make_figures(
    run_root: str | Path,
    out: str | Path | None = None,
    reps: int = 2000,
    only_done: bool = True,
    seed: int = 0,
    table: pd.DataFrame | None = None,
    strict: bool = False,
) -> dict[str, list[Path]]:
    """Write learning curves, aggregate intervals and probability-of-improvement plots (PNG + SVG).

    :param run_root: directory holding run directories (a sweep root)
    :param out: figure directory (default ``run_root/plots``)
    :param reps: bootstrap resamples for the 95% CIs
    :param only_done: use finished runs only
    :param seed: seeds the bootstrap (same data and seed -> same figures)
    :param table: an already loaded :func:`prefrl.analysis.load_runs` table
    :param strict: a damaged run directory raises instead of being left out (``table.attrs["skipped"]``
        lists what was left out otherwise)
    :returns: ``{figure name: [png, svg]}``
    :raises RunDirError: no finished run with an evaluation under ``run_root``, or (``strict``) a damaged run
    """
    run_root = _check_root(run_root)
    _check_reps(reps)
    out = run_root / "plots" if out is None else Path(out)
    if out.is_file():
        raise RunDirError(f"figure folder {out} is a file; give a folder")
    table = analysis.load_runs(run_root, only_done=only_done, strict=strict) if table is None else table
    if table.empty:
        raise RunDirError(_nothing_to_show(run_root, only_done, table))
    figures = _curve_figures(table, out, reps, seed)
    aggregates = analysis.aggregate_table(table, reps=reps, seed=seed)
    for group, rows in aggregates.groupby("group", sort=True):
        figures[f"aggregate_{_slug(str(group))}"] = plots.plot_aggregate_intervals(
            rows, out / f"aggregate_{_slug(str(group))}", title=f"final score, {group}"
        )
    for group, rows_table, metric in analysis.aggregate_groups(table):
        scores, _ = analysis.score_matrices(rows_table, metric)
        probabilities = analysis.probability_of_improvement(scores, reps=reps, seed=seed)
        if not probabilities.empty:
            name = f"improvement_{_slug(group)}"
            figures[name] = plots.plot_probability_of_improvement(probabilities, out / name)
    return figures


def _check_root(run_root: str | Path) -> Path:
    run_root = Path(run_root)
    if not run_root.is_dir():
        raise RunDirError(f"{run_root} is not a directory" + ("" if run_root.exists() else " (not found)"))
    return run_root


def _check_reps(reps: int) -> None:
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ConfigError(f"reps (bootstrap resamples) must be a positive integer, got {reps!r}")


def skipped_runs(table: pd.DataFrame) -> list[analysis.SkippedRun]:
    """The runs a :func:`prefrl.analysis.load_runs` table left out or read in part (its attrs)."""
    return [analysis.SkippedRun(**item) for item in table.attrs.get("skipped", [])]


def _nothing_to_show(run_root: Path, only_done: bool, table: pd.DataFrame) -> str:
    """Why there is no table: no runs at all, or runs that were all left out (the first reason named)."""
    skipped = skipped_runs(table)
    text = f"no {'finished ' if only_done else ''}runs with evaluations under {run_root}"
    damaged = [s for s in skipped if s.kind != "unfinished"]
    if damaged:
        text += f"; {len(damaged)} damaged run(s) left out, e.g. {damaged[0]}"
    unfinished = len(skipped) - len(damaged)
    if unfinished:
        text += f"; {unfinished} unfinished run(s)" + (" (--all includes them)" if only_done else "")
    return text


# --------------------------------------------------------------------------------------------------
# Run status and provenance
# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_dirs(run_root: Path) -> list[Path]:
    """Every run directory under ``run_root`` (holding ``config.yaml``), finished or not."""
    found = {p.parent for p in run_root.rglob("config.yaml")}
    if (run_root / "config.yaml").is_file():
        found.add(run_root)
    return sorted(found)


def _last_error_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def run_status(run_root: str | Path) -> pd.DataFrame:
    """Every run directory with its status: ``done``, ``failed`` (has ``error.txt``) or ``unfinished``.

    Columns: ``run_dir, status, error``.
    """
    rows = []
    for run_dir in _run_dirs(Path(run_root)):
        if (run_dir / "done").is_file():
            rows.append({"run_dir": str(run_dir), "status": "done", "error": ""})
        elif (run_dir / "error.txt").is_file():
            rows.append(
                {
                    "run_dir": str(run_dir),
                    "status": "failed",
                    "error": _last_error_line(run_dir / "error.txt"),
                }
            )
        else:
            rows.append({"run_dir": str(run_dir), "status": "unfinished", "error": ""})
    return pd.DataFrame(rows, columns=["run_dir", "status", "error"])


def provenance(run_root: str | Path) -> dict[str, Any]:
    """Distinct git commits, package versions, Python versions and hosts over the runs' ``meta.json``.

    :returns: ``{"git_commits": {commit(+dirty): runs}, "packages": {name: {version: runs}},
        "python": {version: runs}, "hosts": {host: runs}, "runs": n}``
    """
    commits: dict[str, int] = {}
    packages: dict[str, dict[str, int]] = {}
    pythons: dict[str, int] = {}
    hosts: dict[str, int] = {}
    metas = [_read_json(d / "meta.json") for d in _run_dirs(Path(run_root))]
    for meta in metas:
        commit = str(meta.get("git_commit") or "unknown") + (
            " (uncommitted changes)" if meta.get("git_dirty") else ""
        )
        commits[commit] = commits.get(commit, 0) + 1
        for name, version in (meta.get("packages") or {}).items():
            versions = packages.setdefault(name, {})
            versions[str(version)] = versions.get(str(version), 0) + 1
        python = str(meta.get("python", "unknown"))
        pythons[python] = pythons.get(python, 0) + 1
        host = str(meta.get("hostname", "unknown"))
        hosts[host] = hosts.get(host, 0) + 1
    return {
        "git_commits": commits,
        "packages": packages,
        "python": pythons,
        "hosts": hosts,
        "runs": len(metas),
    }


# --------------------------------------------------------------------------------------------------
# Page building: a list of blocks rendered to Markdown or HTML
# --------------------------------------------------------------------------------------------------


@dataclass
class _Block:
    kind: str  # "h1", "h2", "p", "table", "image", "code"
    content: Any
    caption: str = ""


def _fmt_ci(point: float, low: float, high: float) -> str:
    if not np.isfinite(point):
        return "-"
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def _unbudgeted(summary: pd.DataFrame) -> list[bool]:
    """Rows of runs that ignored the query budget (heron's state pairing)."""
    return [bool(v) for v in summary["unbudgeted"]] if "unbudgeted" in summary else [False] * len(summary)


def _summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    display = pd.DataFrame(
        {
            "env": summary["env"],
            "agent": [
                f"{agent} (unbudgeted)" if unbudgeted else agent
                for agent, unbudgeted in zip(summary["agent"], _unbudgeted(summary), strict=True)
            ],
            "rater": summary["rater"],
            "score": summary["metric"].map(
                {"normalised_score": "normalised", "true_return_mean": "true return"}
            ),
            "seeds": summary["seeds"],
            "IQM [95% CI]": [
                _fmt_ci(*(r.get(k, np.nan) for k in ("iqm", "iqm_low", "iqm_high")))
                for _, r in summary.iterrows()
            ],
            "mean [95% CI]": [
                _fmt_ci(*(r.get(k, np.nan) for k in ("mean", "mean_low", "mean_high")))
                for _, r in summary.iterrows()
            ],
        }
    )
    for column, label, fmt in (
        ("env_steps", "env steps", "{:,.0f}"),
        ("queries", "queries", "{:,.0f}"),
        ("queries_asked", "asked", "{:,.0f}"),
        ("queries_answered", "answered", "{:,.0f}"),
        ("wall_s", "wall time (s)", "{:,.0f}"),
    ):
        if column in summary:
            display[label] = [fmt.format(v) if np.isfinite(v) else "-" for v in summary[column]]
    return display


def _aggregate_display(aggregates: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": aggregates["group"],
            "algorithm": aggregates["algorithm"],
            "runs x tasks": [
                f"{r} x {t}" for r, t in zip(aggregates["runs"], aggregates["tasks"], strict=True)
            ],
            "IQM [95% CI]": [_fmt_ci(r.iqm, r.iqm_low, r.iqm_high) for r in aggregates.itertuples()],
            "mean [95% CI]": [_fmt_ci(r.mean, r.mean_low, r.mean_high) for r in aggregates.itertuples()],
        }
    )


def _rater_blocks(table: pd.DataFrame, figure_dir: Path, pairs: int, seed: int) -> list[_Block]:
    """Diagnostics of the raters the runs used, per env (rate_report + pairwise agreement)."""
    blocks: list[_Block] = []
    for env, rows in table.groupby("env", sort=True):
        raters = sorted(r for r in rows["rater"].unique() if r != "none")
        if not raters:
            continue
        try:
            report = rate_report(str(env), raters, num_pairs=pairs, seed=seed, repeats=1)
            matrix = (
                analysis.rater_agreement(str(env), raters, num_pairs=pairs, seed=seed)
                if len(raters) > 1
                else None
            )
        except Exception as e:  # e.g. a regret rater on an env without an oracle: report, don't fail
            blocks.append(_Block("p", f"{env}: rater diagnostics unavailable ({type(e).__name__}: {e})"))
            continue
        paths = plots.plot_rater_diagnostics(
            report, figure_dir / f"raters_{_slug(str(env))}", agreement=matrix
        )
        frame = pd.DataFrame(report["raters"])
        blocks.append(_Block("table", frame.round(4), f"{env}: {pairs:,} pairs from a random policy"))
        blocks.append(_Block("image", paths[0], f"rater diagnostics on {env}"))
    return blocks


def _failure_blocks(run_root: Path) -> list[_Block]:
    status = run_status(run_root)
    bad = status[status["status"] != "done"]
    counts = status["status"].value_counts()
    text = ", ".join(f"{int(counts.get(k, 0))} {k}" for k in ("done", "failed", "unfinished"))
    blocks = [_Block("p", f"Run directories: {text}.")]
    if not bad.empty:
        shown = bad.assign(run_dir=[str(Path(d).relative_to(run_root)) for d in bad["run_dir"]])
        blocks.append(_Block("table", shown, "runs without a `done` marker (re-run the sweep to retry them)"))
    return blocks


def _skipped_blocks(run_root: Path, table: pd.DataFrame) -> list[_Block]:
    """Every run directory left out of the tables or read in part, with the reason."""
    skipped = skipped_runs(table)
    if not skipped:
        return [_Block("p", "None: every run directory found was read in full.")]

    def shown(path: str) -> str:
        try:
            return str(Path(path).relative_to(run_root))
        except ValueError:
            return path

    frame = pd.DataFrame(
        {
            "run_dir": [shown(s.run_dir) for s in skipped],
            "kind": [s.kind for s in skipped],
            "reason": [s.reason for s in skipped],
        }
    )
    counts = frame["kind"].value_counts()
    text = ", ".join(f"{int(counts.get(k, 0))} {k}" for k in ("damaged", "partial", "unfinished"))
    caption = (
        f"{text}: damaged runs are left out of every table and figure, partial ones lost the lines named, "
        "unfinished ones are not finished yet"
    )
    return [_Block("table", frame, caption)]


def _provenance_blocks(run_root: Path) -> list[_Block]:
    prov = provenance(run_root)
    lines = [f"git commit {c}: {n} run(s)" for c, n in prov["git_commits"].items()]
    for name, versions in sorted(prov["packages"].items()):
        lines.append(f"{name} " + ", ".join(f"{v} ({n} runs)" for v, n in versions.items()))
    lines.append("python " + ", ".join(f"{v} ({n} runs)" for v, n in prov["python"].items()))
    lines.append("hosts " + ", ".join(f"{h} ({n} runs)" for h, n in prov["hosts"].items()))
    return [_Block("code", "\n".join(lines))]


def _build_blocks(
    run_root: Path, table: pd.DataFrame, figure_dir: Path, reps: int, seed: int, rater_pairs: int
) -> list[_Block]:
    blocks = [
        _Block("h1", f"prefrl report: {run_root}"),
        _Block(
            "p",
            f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} from "
            f"{table['run_dir'].nunique()} finished runs. Scores are the deterministic policy's TRUE return, "
            "normalised as 100 * (R - R_random) / (R_oracle - R_random) where the env spec gives both "
            "anchors. "
            f"Intervals are 95% stratified bootstrap CIs over seeds ({reps} resamples; rliable's IQM/mean).",
        ),
        _Block("h2", "Final scores"),
        _Block("table", _summary_display(analysis.summary_with_ci(table, reps=reps, seed=seed))),
        _Block("h2", "Learning curves"),
    ]
    figures = _curve_figures(table, figure_dir, reps, seed)
    blocks.append(_Block("image", figures["learning_curves_steps"][0], "score vs env steps"))
    if "learning_curves_queries" in figures:
        blocks.append(_Block("image", figures["learning_curves_queries"][0], "score vs rater queries"))

    blocks.append(_Block("h2", "Aggregate scores"))
    aggregates = analysis.aggregate_table(table, reps=reps, seed=seed)
    if not aggregates.empty:
        blocks.append(_Block("table", _aggregate_display(aggregates)))
        for group, rows in aggregates.groupby("group", sort=True):
            name = f"aggregate_{_slug(str(group))}"
            paths = plots.plot_aggregate_intervals(rows, figure_dir / name, title=f"final score, {group}")
            blocks.append(_Block("image", paths[0], f"IQM and mean, {group}"))

    blocks.append(_Block("h2", "Probability of improvement"))
    for group, rows_table, metric in analysis.aggregate_groups(table):
        scores, _ = analysis.score_matrices(rows_table, metric)
        probabilities = analysis.probability_of_improvement(scores, reps=reps, seed=seed)
        if probabilities.empty:
            blocks.append(_Block("p", f"{group}: fewer than two comparable algorithms."))
            continue
        blocks.append(_Block("table", probabilities.round(3), f"P(X > Y), {group}"))
        paths = plots.plot_probability_of_improvement(
            probabilities, figure_dir / f"improvement_{_slug(group)}"
        )
        blocks.append(_Block("image", paths[0], f"probability of improvement, {group}"))

    if rater_pairs > 0:
        rater_blocks = _rater_blocks(table, figure_dir, pairs=rater_pairs, seed=seed)
        if rater_blocks:
            blocks += [_Block("h2", "Rater diagnostics"), *rater_blocks]
    blocks += [_Block("h2", "Failed and unfinished runs"), *_failure_blocks(run_root)]
    blocks += [_Block("h2", "Skipped runs"), *_skipped_blocks(run_root, table)]
    blocks += [_Block("h2", "Provenance"), *_provenance_blocks(run_root)]
    return blocks


def _to_markdown(blocks: list[_Block], base: Path) -> str:
    parts = []
    for b in blocks:
        if b.kind == "h1":
            parts.append(f"# {b.content}")
        elif b.kind == "h2":
            parts.append(f"## {b.content}")
        elif b.kind == "p":
            parts.append(str(b.content))
        elif b.kind == "code":
            parts.append(f"```\n{b.content}\n```")
        elif b.kind == "table":
            text = b.content.to_markdown(index=False)
            parts.append(f"{b.caption}\n\n{text}" if b.caption else text)
        elif b.kind == "image":
            rel = Path(b.content).relative_to(base).as_posix()
            parts.append(f"![{b.caption}]({rel})")
    return "\n\n".join(parts) + "\n"


def _to_html(blocks: list[_Block]) -> str:
    body = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{html.escape(str(b.content))}</p>")
        elif b.kind == "code":
            body.append(f"<pre>{html.escape(str(b.content))}</pre>")
        elif b.kind == "table":
            caption = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
            table = b.content.to_html(index=False, border=0, na_rep="-")
            body.append(table.replace(">\n", ">" + caption + "\n", 1) if caption else table)
        elif b.kind == "image":
            data = base64.b64encode(Path(b.content).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}"/>'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
        "td,th{border-bottom:1px solid #ccc;padding:3px 8px;text-align:left}"
        "caption{text-align:left;font-style:italic}img{max-width:100%}pre{background:#f4f4f4;padding:1em}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>prefrl report</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    run_root: str | Path,
    out: str | Path | None = None,
    fmt: str = "md",
    reps: int = 2000,
    seed: int = 0,
    rater_diagnostics: bool = True,
    rater_pairs: int = 2000,
    strict: bool = False,
    table: pd.DataFrame | None = None,
) -> Path:
    """Write the report of every finished run under ``run_root``; return the report's path.

    :param run_root: directory holding run directories (a sweep root)
    :param out: the report file (default ``run_root/report.md`` / ``report.html``); figures go to
        ``<out's directory>/figures/``
    :param fmt: ``"md"`` (figures linked) or ``"html"`` (figures embedded, one self-contained file)
    :param reps: bootstrap resamples for the CIs
    :param seed: seeds the bootstrap and the rater diagnostics
    :param rater_diagnostics: label fresh pairs with the runs' raters and report tie/skip/cycle rates
    :param rater_pairs: pairs labelled for the rater diagnostics (random-policy segments)
    :param strict: a damaged run directory raises instead of being left out and listed under "Skipped runs"
    :param table: the finished runs, already loaded (:func:`prefrl.analysis.load_runs` with
        ``only_done=True``; its ``attrs["skipped"]`` fill the "Skipped runs" section)
    :raises ConfigError: unknown format or ``reps`` < 1
    :raises RunDirError: ``run_root`` is not a directory, ``out`` is one, no finished run under
        ``run_root``, or (``strict``) a damaged run
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format '{fmt}'; expected one of {', '.join(FORMATS)}")
    _check_reps(reps)
    if isinstance(rater_pairs, bool) or not isinstance(rater_pairs, int) or rater_pairs < 0:
        raise ConfigError(f"rater_pairs must be an integer >= 0, got {rater_pairs!r}")
    run_root = _check_root(run_root)
    out = run_root / f"report.{fmt}" if out is None else Path(out)
    if out.is_dir():
        example = out / f"report.{fmt}"
        raise RunDirError(f"report file {out} is a directory; give a file name (e.g. {example})")
    table = analysis.load_runs(run_root, only_done=True, strict=strict) if table is None else table
    if table.empty:
        raise RunDirError(_nothing_to_show(run_root, True, table))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure_dir = out.parent / "figures"
    blocks = _build_blocks(run_root, table, figure_dir, reps, seed, rater_pairs if rater_diagnostics else 0)
    text = _to_markdown(blocks, out.parent) if fmt == "md" else _to_html(blocks)
    write_atomic(out, text)
    return out
