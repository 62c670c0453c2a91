#!/usr/bin/env bash
# The default 50-trial cnn study (as scripts/run.sh runs it: seed 42, warm start, TPE, successive
# halving, 15 epochs per trial) made with --val-loss calibrated, then benchmarks/study_timeline.py
# on it, to compare with the plain-loss study in benchmarks/results/default_study/.
#   bash benchmarks/default_study_calibrated.sh [OUT]   (OUT: benchmarks/results/default_study_calibrated)
# The committed output was made at 935335a, where the calibrated loss was the default (the same
# command without --val-loss; its --timeout 1500 did not bind: the study took 14.9 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/default_study_calibrated}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export FMNIST_SEARCH_ARTIFACTS="$work/artifacts"
db="sqlite:///$work/studies.db"
mkdir -p "$OUT"
.venv/bin/fmnist-search run --space cnn --trials 50 --timeout 1500 --val-loss calibrated \
    --storage "$db" | grep -v '^trials' | tee "$OUT/run.log"
.venv/bin/python benchmarks/study_timeline.py --storage "$db" --study cnn --out "$OUT" \
    | tee "$OUT/study_timeline.txt"
