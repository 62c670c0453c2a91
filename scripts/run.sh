#!/usr/bin/env bash
# The main job: set up, run (or resume) a study, then write its report.
#   SPACE=cnn TRIALS=50 STUDY=$SPACE TIMEOUT=3600 MINUTES=90 bash scripts/run.sh [`run` options]
# The search stops starting trials after TIMEOUT seconds (the running one finishes); running
# the script again resumes the study until it holds TRIALS finished trials. The report trains
# its finalists longer than the search did (2x) only if that is estimated to fit in what
# is left of MINUTES after the search (`report --longer-within`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
SPACE=${SPACE:-cnn}
TRIALS=${TRIALS:-50}
STUDY=${STUDY:-$SPACE}
TIMEOUT=${TIMEOUT:-3600}
MINUTES=${MINUTES:-90}
started=$(date +%s)
.venv/bin/fmnist-search run --space "$SPACE" --trials "$TRIALS" --study "$STUDY" \
    --timeout "$TIMEOUT" "$@"
left=$(( MINUTES - ($(date +%s) - started) / 60 ))
.venv/bin/fmnist-search report --study "$STUDY" --longer-within $(( left > 0 ? left : 0 ))
