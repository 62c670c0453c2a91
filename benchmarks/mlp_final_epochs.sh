#!/usr/bin/env bash
# Does a longer final training pay for the mlp space's *sampled* trials? (benchmarks/final_epochs.py
# measures the warm starts, which have no dropout: +0.0010 at 30 epochs for the MLP.)
#   bash benchmarks/mlp_final_epochs.sh [OUT]     (OUT: benchmarks/results/mlp_final_epochs)
# One mlp study of 15 minutes at most (defaults otherwise: TPE, successive halving, warm start,
# 15 epochs per trial), then `report` on it twice: its 3 best trials re-trained with 3 seeds each
# for their own 15 epochs and for 30. Both reports re-train the same trials with the same seeds,
# so the difference is the training length alone. About 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/mlp_final_epochs}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export FMNIST_SEARCH_ARTIFACTS="$work/artifacts"
db="sqlite:///$work/mlp.db"
mkdir -p "$OUT"
.venv/bin/fmnist-search run --space mlp --trials 400 --study mlp400 --storage "$db" \
    --timeout 900 2>&1 | tee "$OUT/run.log"
for epochs in 15 30; do
    .venv/bin/fmnist-search report --study mlp400 --storage "$db" --epochs "$epochs" \
        --out "$work/report_$epochs" 2>&1 | grep -v -e Warning -e optuna_warn | tail -12
    cp "$work/report_$epochs/report.md" "$OUT/report_${epochs}_epochs.md"
    cp "$work/report_$epochs/results.json" "$OUT/results_${epochs}_epochs.json"
done
