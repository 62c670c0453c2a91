#!/usr/bin/env bash
# The README's budget and Pareto-front examples, measured: two cnn studies of BUDGET seconds each
# (default 240) on this machine, then their best trials / Pareto front and every trial as CSV.
#   bash benchmarks/budgets_example.sh            (after scripts/setup.sh)
# Writes benchmarks/results/budgets_example/{under_50k,latency_front}.{json,csv,log}.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-240}
OUT=benchmarks/results/budgets_example
DB=$(mktemp -d)/budgets.db
mkdir -p "$OUT"
fs() { .venv/bin/fmnist-search "$@"; }

# The most accurate cnn under 50,000 parameters (no warm start: its configurations are larger).
fs run --space cnn --study under_50k --max-params 50000 --no-warm-start --trials 100000 \
  --timeout "$BUDGET" --seed 0 --storage "sqlite:///$DB" > "$OUT/under_50k.log" 2>&1
fs best --study under_50k --storage "sqlite:///$DB" --json > "$OUT/under_50k.json"
fs trials --study under_50k --storage "sqlite:///$DB" --csv "$OUT/under_50k.csv"

# Validation loss against latency at batch 1: the Pareto front.
fs run --space cnn --study latency_front --objectives val_loss,latency --no-warm-start \
  --trials 100000 --timeout "$BUDGET" --seed 0 --storage "sqlite:///$DB" \
  > "$OUT/latency_front.log" 2>&1
fs best --study latency_front --storage "sqlite:///$DB" --json > "$OUT/latency_front.json"
fs trials --study latency_front --storage "sqlite:///$DB" --csv "$OUT/latency_front.csv"
tail -n 3 "$OUT/under_50k.log" "$OUT/latency_front.log"
