"""The study's part 6: a performance table, measured in one run on one machine.

* **Env steps per second** of every online agent beside its reference on the true reward (ppo for rm_ppo,
  heron and spo; sac for pebble), on Pendulum-v1 and HalfCheetah-v5: each agent trains once in its own
  ``prefrl run`` process, one after another, and the process's wall time, CPU time and peak resident
  memory (``ru_maxrss`` of that child alone, from ``os.wait4``) are recorded. Evaluation is limited to
  the start and the end (2 episodes), so the figures are training throughput. The ratios to the reference
  are the comparable numbers (absolute rates drift with the machine's load);
* **rater throughput**: pairs labelled per second by one ``label`` call of each rater on 200,000 pairs of
  50-step segments (``benchmarks/bench_raters.py``'s measurement, best of 3);
* **CPL gradient steps per second** at the CPL paper's size ([512, 512], batch 96 pairs of 64 steps) on
  CPU, through ``benchmarks/bench_cpl.py --env halfcheetah timing`` (which also refreshes
  ``results/cpl/halfcheetah/timing.csv``).

Writes ``results/study/performance.md`` and ``.csv`` with the machine, the commit, the load and the wall
time of the whole measurement::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study_performance.py

About 15 minutes on one core. Run it with at most one other single-threaded job on a 2-core machine
(the same load for every agent; it is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_raters import random_pairs, synthetic_segments, time_rater  # a sibling benchmark script

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Timing:
    """One agent's run: budgets and what its process used."""

    env: str
    agent: str
    reference: str
    steps: int
    queries: int


#: (env, agent, its reference, env steps, queries). SAC-family budgets include the 1k / 10k random
#: warm-up steps of agents/sac.yaml, and pebble's unsupervised pre-training after them. pebble's
#: HalfCheetah run at 200k steps and 1,400 queries beside sac is benchmarks/bench_pebble.py halfcheetah.
TIMINGS = (
    Timing("pendulum", "ppo", "ppo", 100_000, 0),
    Timing("pendulum", "rm_ppo", "ppo", 100_000, 500),
    Timing("pendulum", "heron", "ppo", 100_000, 500),
    Timing("pendulum", "spo", "ppo", 100_000, 0),
    Timing("pendulum", "sac", "sac", 10_000, 0),
    Timing("pendulum", "pebble", "sac", 10_000, 200),
    Timing("halfcheetah", "ppo", "ppo", 50_000, 0),
    Timing("halfcheetah", "rm_ppo", "ppo", 50_000, 1_400),
    Timing("halfcheetah", "heron", "ppo", 50_000, 1_400),
    Timing("halfcheetah", "spo", "ppo", 50_000, 0),
    Timing("halfcheetah", "sac", "sac", 25_000, 0),
    # two query points fit in 25k steps (after 10k warm-up and 9k unsupervised steps), 128 queries each
    Timing("halfcheetah", "pebble", "sac", 25_000, 256),
)
RATERS = ("partial_return", "regret", "stoc", "mistake", "skip", "equal", "myopic", "intransitive", "panel")
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study_performance.py"


def rater_of(timing: Timing) -> str:
    if timing.agent in ("ppo", "sac"):
        return "none"
    return "hierarchical" if timing.agent == "heron" else "partial_return"


def time_run(timing: Timing, out: Path) -> dict:
    """Train one agent in a child process; its wall time, CPU time and peak memory."""
    command = [
        sys.executable, "-m", "prefrl", "run", "--env", timing.env, "--agent", timing.agent,
        "--rater", rater_of(timing), "--steps", str(timing.steps), "--queries", str(timing.queries),
        "--eval-freq", str(10 * timing.steps), "--eval-episodes", "2", "--out", str(out), "--device", "cpu",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed: {errors.read().decode()[-2000:]}")
    # the run's own wall time (meta.json: from the run's start to its end) leaves out the interpreter's
    # start and imports (~5 s), a fixed cost that would pull every ratio towards 1
    run_wall = float(json.loads((out / "meta.json").read_text())["wall_s"])
    return {
        "env": timing.env,
        "agent": timing.agent,
        "reference": timing.reference,
        "env_steps": timing.steps,
        "queries": timing.queries,
        "wall_s": run_wall,
        "process_wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "steps_per_s": timing.steps / run_wall,
    }


def rater_throughput(pairs: int = 200_000, repeats: int = 3) -> pd.DataFrame:
    segments = synthetic_segments("pendulum", 20_000, 50)
    index = random_pairs(20_000, pairs)
    return pd.DataFrame([time_rater(r, "pendulum", segments, index, repeats) for r in RATERS])


def cpl_throughput() -> pd.DataFrame:
    script = PROJECT_ROOT / "benchmarks" / "bench_cpl.py"
    command = [sys.executable, str(script), "--env", "halfcheetah", "timing", "--steps", "40"]
    subprocess.run(command, check=True)
    return pd.read_csv(PROJECT_ROOT / "results" / "cpl" / "halfcheetah" / "timing.csv")


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    ) if Path("/proc/cpuinfo").is_file() else platform.processor()  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT).stdout.strip()  # fmt: skip
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; commit {commit}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/study/performance"))
    args = parser.parse_args()
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="prefrl-perf-") as scratch:
        for i, timing in enumerate(TIMINGS):
            rows.append(time_run(timing, Path(scratch) / f"run{i}"))
            print(rows[-1], flush=True)
    runs = pd.DataFrame(rows)
    per_step = (runs["wall_s"] / runs["env_steps"]).to_numpy()
    reference = {(r.env, r.agent): per_step[i] for i, r in enumerate(runs.itertuples())}
    runs["ratio"] = [per_step[i] / reference[(r.env, r.reference)] for i, r in enumerate(runs.itertuples())]
    raters = rater_throughput()
    cpl = cpl_throughput()
    wall = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs.round(3).to_csv(args.out.with_suffix(".csv"), index=False)
    lines = [
        "# Study part 6: performance",
        "",
        f"    {COMMAND}",
        "",
        f"Machine: {machine()}. Load average (1 min) at the start: {load_before:.2f}; the whole measurement "
        f"took {wall / 60:.1f} min of wall time. One thread per process (`OMP_NUM_THREADS=1`).",
        "",
        "## Online agents: env steps per second beside the reference on the true reward",
        "",
        "Each agent trains once in its own process, one after another; `wall s`: the run's own wall time",
        "(meta.json, without the interpreter's start), `CPU s` and `peak MB` the whole process's; `ratio` =",
        "wall time per env step over the reference's (same env, same run). SAC-family budgets include the",
        "random warm-up steps. Every agent runs with its shipped settings (agents/*.yaml), so a ratio also",
        "holds any difference of PPO settings: spo's rollouts are whole multiples of its segment and",
        "horizon (agents/spo.yaml); rm_ppo and heron share ppo's settings on both envs. The",
        "overhead at equal PPO settings, side by side over several seeds, is `results/overhead/`. pebble's",
        "short runs are dominated by its reward-model fits and pre-training; at 200k HalfCheetah steps it",
        "took 1.17x sac's wall time (`results/pebble/halfcheetah.md`). One run per agent, with one other",
        "single-threaded training on the second core throughout: single ratios carry a few percent of noise.",
        "",
        "| env | agent | reference | env steps | queries | steps/s | ratio | CPU s | wall s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs.itertuples():
        lines.append(
            f"| {r.env} | {r.agent} | {r.reference} | {r.env_steps:,} | {r.queries:,} | "
            f"{r.steps_per_s:,.0f} | {r.ratio:.2f} | {r.cpu_s:.1f} | {r.wall_s:.1f} | {r.peak_rss_mb:.0f} |"
        )
    lines += [
        "",
        "## Rater throughput (Pendulum segments of 50 steps, 200,000 pairs per call, best of 3)",
        "",
        "| rater | pairs/s |",
        "|---|---|",
        *(f"| {r.rater} | {r.pairs_per_s:,.0f} |" for r in raters.itertuples()),
        "",
        "## CPL gradient steps per second (HalfCheetah-v5 dataset, CPU, one thread)",
        "",
        "| setting | device | gradient steps/s |",
        "|---|---|---|",
        *(f"| {r.setting} | {r.device} | {r.grad_steps_per_s:.2f} |" for r in cpl.itertuples()),
        "",
        "No GPU was available for this measurement (`bench_cpl.py timing --device cuda` measures one).",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
