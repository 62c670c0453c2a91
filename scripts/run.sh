#!/usr/bin/env bash
# The main job: set up, run (or resume) a study, then write its report.
#   SPACE=cnn TRIALS=50 STUDY=$SPACE bash scripts/run.sh [more `fmnist-search run` options]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
SPACE=${SPACE:-cnn}
TRIALS=${TRIALS:-50}
STUDY=${STUDY:-$SPACE}
.venv/bin/fmnist-search run --space "$SPACE" --trials "$TRIALS" --study "$STUDY" "$@"
.venv/bin/fmnist-search report --study "$STUDY"
