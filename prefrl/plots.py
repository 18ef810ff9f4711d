"""Figures from the tidy run table of :mod:`prefrl.analysis` (written headless, PNG and SVG).

* :func:`plot_learning_curves` - IQM over seeds with a shaded 95% stratified-bootstrap interval (rliable),
  one line per agent, one panel per (env, rater), against env steps or rater queries; offline agents
  (cpl, bc: their progress.csv counts ``grad_steps``) get panels of their own against gradient steps, so
  neither x range squashes the other;
* :func:`plot_aggregate_intervals` - final IQM and mean with 95% CIs per algorithm (rliable's
  ``plot_interval_estimates``);
* :func:`plot_probability_of_improvement` - P(X > Y) with 95% CIs for pairs of algorithms;
* :func:`plot_rater_diagnostics` - tie / skip / cycle rates and agreement of raters
  (:func:`prefrl.diagnostics.rate_report`), with a rater-by-rater agreement heatmap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from rliable import plot_utils
from scipy.stats import trim_mean

from prefrl.analysis import bootstrap_ci, is_offline, score_metric

AXIS_LABELS = {
    "env_steps": "environment steps",
    "grad_steps": "gradient steps (offline, fixed dataset)",
    "queries": "rater queries",
    "true_return_mean": "true return (deterministic policy)",
    "normalised_score": "normalised score (0 = random, 100 = oracle)",
}

#: file formats every figure is written in
FORMATS = (".png", ".svg")


def save_figure(fig: plt.Figure, out: str | Path) -> list[Path]:
    """Write ``fig`` as ``out`` with each suffix of :data:`FORMATS`, close it, return the paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in FORMATS:
        path = out.with_suffix(suffix)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def metric_label(metric: str) -> str:
    """Axis label for a score column; a true return is marked as such (no normalisation anchors)."""
    if metric == "true_return_mean":
        return "true return (not normalised: env spec has no random/oracle returns)"
    return AXIS_LABELS.get(metric, metric)


def _aligned_scores(runs: pd.DataFrame, x: str, y: str, grid: np.ndarray) -> np.ndarray:
    """``[seeds, 1, len(grid)]``: each seed's curve interpolated onto a common x grid."""
    curves = []
    for _, run in runs.groupby("seed"):
        # a query count repeats once the budget is spent: keep the latest evaluation at each x
        run = run.sort_values([x, "env_steps"]).drop_duplicates(x, keep="last")
        xs, ys = run[x].to_numpy(float), run[y].to_numpy(float)
        curve = np.interp(grid, xs, ys, left=np.nan, right=np.nan)  # no extrapolation beyond the evals
        curves.append(curve)
    return np.asarray(curves)[:, None, :]


def iqm_curve(scores: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """IQM per grid point and its 95% stratified-bootstrap CI (``[2, T]``).

    :param scores: ``[runs, tasks, T]``; the IQM at each point pools runs and tasks, as rliable's
        ``aggregate_iqm`` (a 25% trimmed mean) does
    """

    def per_frame_iqm(s: np.ndarray) -> np.ndarray:
        return trim_mean(s.reshape(-1, s.shape[-1]), proportiontocut=0.25, axis=0)

    return bootstrap_ci(per_frame_iqm, scores, reps=reps, seed=seed)


def _panel_metric(panel: pd.DataFrame, y: str) -> str:
    if y != "auto":
        return y

    return score_metric(panel)


@dataclass(frozen=True)
class CurvePanel:
    """One panel of :func:`learning_curve_figure`: the rows drawn in it and its x column."""

    env: str
    rater: str
    rows: pd.DataFrame
    x: str
    offline: bool = False

    @property
    def title(self) -> str:
        """``"pendulum - rater: regret"``, marked ``(offline)`` for offline agents."""
        return f"{self.env} - rater: {self.rater}" + (" (offline)" if self.offline else "")


def _panels(table: pd.DataFrame, x: str) -> list[tuple[str, str, pd.DataFrame]]:
    """(env, rater, rows) of the online runs: agents without a rater join every rater panel of their env."""
    table = table[~is_offline(table)]
    panels = []
    for env, rows in table.groupby("env", sort=True):
        raters = sorted(r for r in rows["rater"].unique() if r != "none")
        reference = rows[rows["rater"] == "none"]
        if x == "queries":
            reference = reference.iloc[0:0]  # no queries: nothing to draw against the query axis
        for rater in raters:
            panels.append((str(env), rater, pd.concat([rows[rows["rater"] == rater], reference])))
        if not raters and not reference.empty:
            panels.append((str(env), "none", reference))
    return panels


def curve_panels(table: pd.DataFrame, x: str = "env_steps") -> list[CurvePanel]:
    """The panels of a learning-curve figure: online (env, rater) panels, then offline ones.

    Offline runs log a constant ``env_steps`` (their dataset's size) and count progress in gradient steps,
    so against ``x="env_steps"`` they get panels of their own with ``x="grad_steps"``. Against
    ``x="queries"`` they are left out: their labels are all given before the first gradient step.
    """
    panels = [CurvePanel(env, rater, rows, x) for env, rater, rows in _panels(table, x)]
    offline = table[is_offline(table)]
    if x != "queries":
        offline_x = "grad_steps" if x == "env_steps" else x
        for (env, rater), rows in offline.groupby(["env", "rater"], sort=True):
            panels.append(CurvePanel(str(env), str(rater), rows, offline_x, offline=True))
    return [p for p in panels if not p.rows.empty]


def learning_curve_figure(
    table: pd.DataFrame,
    x: str = "env_steps",
    y: str = "true_return_mean",
    reps: int = 2000,
    grid_points: int = 50,
    max_cols: int = 3,
    seed: int = 0,
) -> plt.Figure:
    """The figure of :func:`plot_learning_curves` (not saved); its axes follow :func:`curve_panels`."""
    needed = [x] + ([] if y == "auto" else [y])
    table = table.dropna(subset=needed)
    panels = curve_panels(table, x) if not table.empty else []
    if not panels:
        raise ValueError(f"no evaluations with both '{x}' and '{y}' to plot")
    cols = min(max_cols, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        _draw_panel(ax, panel, y, reps, grid_points, seed)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _draw_panel(ax: plt.Axes, panel: CurvePanel, y: str, reps: int, grid_points: int, seed: int) -> None:
    x = panel.x
    metric = _panel_metric(panel.rows, y)
    rows = panel.rows.dropna(subset=[metric, x])
    # each panel's own x range: a long offline run never squashes the online curves, or the reverse
    grid = np.linspace(0.0, rows[x].max(), grid_points) if len(rows) else np.zeros(0)
    for (agent, agent_rater), runs in sorted(rows.groupby(["agent", "rater"])):
        scores = _aligned_scores(runs, x, metric, grid)
        valid = ~np.isnan(scores).any(axis=(0, 1))
        if not valid.any():
            continue
        point, ci = iqm_curve(scores[..., valid], reps=reps, seed=seed)
        seeds = scores.shape[0]
        style = "--" if agent_rater == "none" and panel.rater != "none" else "-"
        label = f"{agent}{' (no rater)' if style == '--' else ''} ({seeds} seed{'s' * (seeds > 1)})"
        (line,) = ax.plot(grid[valid], point, style, label=label)
        ax.fill_between(grid[valid], ci[0], ci[1], color=line.get_color(), alpha=0.2)
    ax.set_title(panel.title)
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(metric_label(metric) + "\n(IQM over seeds, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def plot_learning_curves(
    table: pd.DataFrame,
    out: str | Path,
    x: str = "env_steps",
    y: str = "true_return_mean",
    reps: int = 2000,
    grid_points: int = 50,
    max_cols: int = 3,
    seed: int = 0,
) -> list[Path]:
    """One figure with a panel per (env, rater); returns the written files (PNG and SVG).

    Agents that use no rater (``ppo``) are drawn dashed in every rater panel of their env, as the
    reference; against ``x="queries"`` they are left out (they ask none). Offline agents (cpl, p_iql, bc) are
    drawn in panels of their own against gradient steps, each panel with its own x range
    (:func:`curve_panels`).

    :param table: :func:`prefrl.analysis.load_runs` output
    :param out: file path; its suffix is replaced by ``.png`` and ``.svg``
    :param x: ``"env_steps"`` or ``"queries"``
    :param y: score column, or ``"auto"``: the normalised score where the env has one, else the true return
    :param reps: bootstrap resamples for the CIs
    :param grid_points: x positions the seeds' curves are interpolated onto
    :param max_cols: panels per row
    :param seed: seeds the bootstrap
    :raises ValueError: nothing to draw (e.g. only offline runs against ``x="queries"``)
    """
    fig = learning_curve_figure(table, x, y, reps=reps, grid_points=grid_points, max_cols=max_cols, seed=seed)
    return save_figure(fig, out)


def plot_aggregate_intervals(
    aggregates: pd.DataFrame, out: str | Path, title: str | None = None
) -> list[Path]:
    """Final IQM and mean with 95% CIs per algorithm, one group (rliable ``plot_interval_estimates``).

    :param aggregates: rows of :func:`prefrl.analysis.aggregate_table` for one group
    """
    if aggregates.empty:
        raise ValueError("no aggregates to plot")
    algorithms = list(aggregates["algorithm"])
    points = {r.algorithm: np.array([r.iqm, r.mean]) for r in aggregates.itertuples()}
    intervals = {
        r.algorithm: np.array([[r.iqm_low, r.mean_low], [r.iqm_high, r.mean_high]])
        for r in aggregates.itertuples()
    }
    metric = aggregates["metric"].iloc[0]
    runs, tasks = int(aggregates["runs"].min()), int(aggregates["tasks"].iloc[0])
    fig, _ = plot_utils.plot_interval_estimates(
        points,
        intervals,
        metric_names=["IQM", "Mean"],
        algorithms=algorithms,
        xlabel=metric_label(metric),
        subfigure_width=4.5,
        row_height=0.5,
        xlabel_y_coordinate=-0.35 if len(algorithms) < 4 else -0.15,
    )
    # above the per-metric titles ("IQM", "Mean"): the figure is short, so offset in inches
    height = fig.get_size_inches()[1]
    fig.suptitle(
        (title or "final score") + f" - {tasks} task(s), >= {runs} run(s) each, 95% stratified bootstrap CIs",
        y=1.0 + 0.55 / height,
        fontsize=10,
    )
    return save_figure(fig, out)


def plot_probability_of_improvement(probabilities: pd.DataFrame, out: str | Path) -> list[Path]:
    """P(X > Y) with 95% CIs, one row per pair (rliable ``plot_probability_of_improvement``).

    :param probabilities: :func:`prefrl.analysis.probability_of_improvement` output
    """
    if probabilities.empty:
        raise ValueError("no algorithm pairs to plot")
    points = {f"{r.x};{r.y}": r.probability for r in probabilities.itertuples()}
    intervals = {f"{r.x};{r.y}": np.array([r.low, r.high]) for r in probabilities.itertuples()}
    fig, ax = plt.subplots(figsize=(5.0, 0.5 * len(points) + 1.2))
    plot_utils.plot_probability_of_improvement(
        points,
        intervals,
        pair_separator=";",
        ax=ax,
        xlabel="P(X > Y): probability that a run of X scores higher than a run of Y",
        ticklabelsize="small",
        labelsize="small",
    )
    return save_figure(fig, out)


def plot_rater_diagnostics(
    report: Mapping[str, Any], out: str | Path, agreement: pd.DataFrame | None = None
) -> list[Path]:
    """Bars of tie / skip / cycle rates and agreement per rater; optional rater-by-rater heatmap.

    :param report: :func:`prefrl.diagnostics.rate_report` output (its ``raters`` rows give ``tie_share``,
        ``skip_share``, ``cycle_rate`` and ``agreement`` with noise-free partial-return labels)
    :param agreement: :func:`prefrl.analysis.rater_agreement` output, drawn as a heatmap
    """
    rows = list(report["raters"])
    if not rows:
        raise ValueError("the rater report has no raters")
    names = [str(r["rater"]) for r in rows]
    quantities = [
        ("tie_share", "ties (label 0.5)"),
        ("skip_share", "skipped queries"),
        ("cycle_rate", "intransitive triples"),
        ("agreement", "agreement with partial_return"),
    ]
    panels = len(quantities) + (agreement is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels + 1.5, 0.45 * len(names) + 2.2), squeeze=False)
    y = np.arange(len(names))
    for ax, (key, title) in zip(axes[0], quantities, strict=False):
        values = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
        ax.barh(y, np.nan_to_num(values), height=0.6, color="tab:blue", alpha=0.8)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_yticks(y, names if ax is axes[0][0] else [""] * len(names))
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of queries / triples / pairs (0-1)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    if agreement is not None:
        ax = axes[0][-1]
        image = ax.imshow(agreement.to_numpy(float), vmin=0.5, vmax=1.0, cmap="viridis")
        ticks = np.arange(len(agreement))
        ax.set_xticks(ticks, list(agreement.columns), rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, list(agreement.index), fontsize=8)
        for i in range(len(agreement)):
            for j in range(len(agreement)):
                value = agreement.iat[i, j]
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_title("agreement between raters (1 = same labels)", fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, label="mean 1 - |y_a - y_b|")
    fig.suptitle(
        f"rater diagnostics: {report.get('env', '?')}, {report.get('num_pairs', '?')} pairs of "
        f"{report.get('segment_length', '?')}-step segments ({report.get('policy', '?')} policy)",
        fontsize=11,
    )
    fig.tight_layout()
    return save_figure(fig, out)
