#!/usr/bin/env bash
# Train the shipped oracle experts one after another (see agents/oracle.yaml for the settings), each into
# the user oracle folder, then install it into prefrl/oracle/checkpoints (and its anchors into envs/*.yaml).
# Usage: bash benchmarks/train_oracles.sh [ENV ...]   (default: every MuJoCo env in envs/)
set -u
cd "$(dirname "$0")/.."
envs=("$@")
[ ${#envs[@]} -eq 0 ] && envs=(halfcheetah hopper walker2d swimmer reacher ant)
mkdir -p logs
for env in "${envs[@]}"; do
  echo "== $env $(date -Is)"
  OMP_NUM_THREADS=1 .venv/bin/prefrl oracle train --env "$env" --seed 0 > "logs/oracle_$env.log" 2>&1 \
    && .venv/bin/prefrl oracle install --env "$env" >> "logs/oracle_$env.log" 2>&1
  tail -1 "logs/oracle_$env.log"
done
