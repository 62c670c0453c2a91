#!/usr/bin/env bash
# The main job: set up, run (or resume) a study, then write its report.
#   SPACE=cnn TRIALS=200 STUDY=$SPACE TIMEOUT=2700 MINUTES=90 bash scripts/run.sh [`run` options]
# The search runs for TIMEOUT seconds (45 minutes; the running trial finishes) or until the study
# holds TRIALS finished trials, whichever comes first: on 2 CPU cores the time ends a cnn study
# (about 110 trials), the count an mlp one (in about 20 minutes). Running the script again
# resumes the study for another TIMEOUT. The report trains its finalists longer than the
# search did (up to 2x) as far as that is estimated to fit in what is left of MINUTES, counted
# from the script's start (set-up and the search's last trial included), less REPORT_FIXED
# minutes for what the report does besides re-training (loading the data, timing the finalists,
# scoring on the test set, figures: about 1.5 minutes on 2 cores) (`report --longer-within`).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
source scripts/setup.sh
SPACE=${SPACE:-cnn}
TRIALS=${TRIALS:-200}
STUDY=${STUDY:-$SPACE}
TIMEOUT=${TIMEOUT:-2700}
MINUTES=${MINUTES:-90}
REPORT_FIXED=${REPORT_FIXED:-1.5}
.venv/bin/fmnist-search run --space "$SPACE" --trials "$TRIALS" --study "$STUDY" \
    --timeout "$TIMEOUT" "$@"
elapsed=$(( $(date +%s) - started ))
left=$(awk -v m="$MINUTES" -v s="$elapsed" -v f="$REPORT_FIXED" \
    'BEGIN { l = m - s / 60 - f; printf "%.1f", (l > 0 ? l : 0) }')
echo "$(( elapsed / 60 )) minutes since the start; the report's re-trainings get $left"
.venv/bin/fmnist-search report --study "$STUDY" --longer-within "$left"
