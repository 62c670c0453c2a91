#!/usr/bin/env bash
# The main job: set up, run (or resume) a study, then write its report.
#   SPACE=cnn TRIALS=50 STUDY=$SPACE TIMEOUT=3600 bash scripts/run.sh [more `run` options]
# The search stops starting trials after TIMEOUT seconds (the running one finishes); running
# the script again resumes the study until it holds TRIALS finished trials.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
SPACE=${SPACE:-cnn}
TRIALS=${TRIALS:-50}
STUDY=${STUDY:-$SPACE}
TIMEOUT=${TIMEOUT:-3600}
.venv/bin/fmnist-search run --space "$SPACE" --trials "$TRIALS" --study "$STUDY" \
    --timeout "$TIMEOUT" "$@"
.venv/bin/fmnist-search report --study "$STUDY"
