"""Learning-curve plots from the tidy run table of :mod:`prefrl.analysis`.

Curves show the IQM over seeds with a shaded 95% stratified-bootstrap interval (rliable), one line per
agent, one panel per (env, rater). Figures are written headless (Agg backend) as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

AXIS_LABELS = {
    "env_steps": "environment steps",
    "queries": "rater queries",
    "true_return_mean": "true return (deterministic policy)",
    "normalised_score": "normalised score (0 = random, 100 = oracle)",
}


def _aligned_scores(runs: pd.DataFrame, x: str, y: str, grid: np.ndarray) -> np.ndarray:
    """``[seeds, 1, len(grid)]``: each seed's curve interpolated onto a common x grid."""
    curves = []
    for _, run in runs.groupby("seed"):
        run = run.sort_values(x)
        xs, ys = run[x].to_numpy(float), run[y].to_numpy(float)
        curve = np.interp(grid, xs, ys, right=np.nan)  # no extrapolation beyond a run's last eval
        curves.append(curve)
    return np.asarray(curves)[:, None, :]


def iqm_curve(scores: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """IQM per grid point and its 95% stratified-bootstrap CI (``[2, T]``) via rliable."""
    from rliable import library as rly
    from rliable import metrics

    def per_frame_iqm(s: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(s[..., t]) for t in range(s.shape[-1])])

    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global generator
    point, interval = rly.get_interval_estimates({"a": scores}, per_frame_iqm, reps=reps)
    return point["a"], interval["a"]


def plot_learning_curves(
    table: pd.DataFrame,
    out: str | Path,
    x: str = "env_steps",
    y: str = "true_return_mean",
    reps: int = 2000,
    grid_points: int = 50,
) -> list[Path]:
    """One figure with a panel per (env, rater); returns the written files (PNG and SVG)."""
    table = table.dropna(subset=[x, y])
    if table.empty:
        raise ValueError(f"no evaluations with both '{x}' and '{y}' to plot")
    panels = sorted(table.groupby(["env", "rater"]).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.0), squeeze=False)
    for ax, (env, rater) in zip(axes[0], panels, strict=True):
        panel = table[(table["env"] == env) & (table["rater"] == rater)]
        grid = np.linspace(0.0, panel[x].max(), grid_points)
        for agent, runs in sorted(panel.groupby("agent")):
            scores = _aligned_scores(runs, x, y, grid)
            valid = ~np.isnan(scores).any(axis=(0, 1))
            if not valid.any():
                continue
            point, ci = iqm_curve(scores[..., valid], reps=reps)
            seeds = scores.shape[0]
            (line,) = ax.plot(grid[valid], point, label=f"{agent} ({seeds} seed{'s' * (seeds > 1)})")
            ax.fill_between(grid[valid], ci[0], ci[1], color=line.get_color(), alpha=0.2)
        ax.set_title(f"{env} - rater: {rater}")
        ax.set_xlabel(AXIS_LABELS.get(x, x))
        ax.set_ylabel(AXIS_LABELS.get(y, y) + " (IQM, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        path = out.with_suffix(suffix)
        fig.savefig(path, dpi=120)
        written.append(path)
    plt.close(fig)
    return written
