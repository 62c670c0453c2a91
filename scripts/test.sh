#!/usr/bin/env bash
# The whole test suite: set up with the test dependencies, then pytest (slow tests included).
#   bash scripts/test.sh [pytest options, e.g. -m "not slow"]
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test source scripts/setup.sh
.venv/bin/python -m pytest "$@"
