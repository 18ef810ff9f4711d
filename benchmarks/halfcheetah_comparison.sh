#!/usr/bin/env bash
# HalfCheetah-v5, 1M env steps: reward-model PPO (1,400 queries) and SPO against PPO on the true reward,
# with the partial-return and the intransitive rater (issues: rm_ppo acceptance (b), spo acceptance (b)).
# Raw runs go to results/halfcheetah/runs (git-ignored); the report and figures are committed.
# Usage: bash benchmarks/halfcheetah_comparison.sh [SEEDS]   (about 20-40 min per run on one CPU core)
set -uo pipefail  # keep going when a run fails: the sweep records it
cd "$(dirname "$0")/.."
seeds=${1:-1}
out=results/halfcheetah/runs
export OMP_NUM_THREADS=1
common=(--env halfcheetah --seeds "$seeds" --out "$out" --eval-freq 50000)
.venv/bin/prefrl sweep "${common[@]}" --steps 1000000 --jobs 2 --agent ppo,rm_ppo --rater partial_return \
    --queries 1400 &
# spo has no query budget (every comparison is counted and logged); 3 runs beside the two above
.venv/bin/prefrl sweep "${common[@]}" --steps 1000000 --jobs 2 --agent spo --rater partial_return,intransitive &
.venv/bin/prefrl sweep "${common[@]}" --steps 1000000 --jobs 1 --agent rm_ppo --rater intransitive \
    --queries 1400 &
wait
.venv/bin/prefrl report "$out" --out results/halfcheetah/report.md
