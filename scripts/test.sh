#!/usr/bin/env bash
# The whole test suite: set up with the test dependencies, then pytest (slow tests included).
#   bash scripts/test.sh [pytest options, e.g. -m "not slow"]
set -euo pipefail
cd "$(dirname "$0")/.."
# The storage tests start their own PostgreSQL server on 127.0.0.1.
APT_NEEDS="postgresql=/usr/lib/postgresql/*/bin/initdb" EXTRAS=test source scripts/setup.sh
.venv/bin/python -m pytest "$@"
