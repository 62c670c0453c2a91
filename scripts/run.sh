#!/usr/bin/env bash
# The main job: set up, run (or resume) a study, then write its report.
#   SPACE=cnn TRIALS=200 STUDY=$SPACE TIMEOUT=2700 MINUTES=90 bash scripts/run.sh [`run` options]
# The search runs for TIMEOUT seconds (45 minutes; the running trial finishes) or until the study
# holds TRIALS finished trials, whichever comes first: on 2 CPU cores the time ends a cnn study
# (about 110 trials), the count an mlp one (in about 20 minutes). Running the script again
# resumes the study for another TIMEOUT. The report trains its finalists longer than the
# search did (up to 2x) as far as that is estimated to fit in what is left of MINUTES after the
# search (`report --longer-within`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
SPACE=${SPACE:-cnn}
TRIALS=${TRIALS:-200}
STUDY=${STUDY:-$SPACE}
TIMEOUT=${TIMEOUT:-2700}
MINUTES=${MINUTES:-90}
started=$(date +%s)
.venv/bin/fmnist-search run --space "$SPACE" --trials "$TRIALS" --study "$STUDY" \
    --timeout "$TIMEOUT" "$@"
left=$(( MINUTES - ($(date +%s) - started) / 60 ))
.venv/bin/fmnist-search report --study "$STUDY" --longer-within $(( left > 0 ? left : 0 ))
