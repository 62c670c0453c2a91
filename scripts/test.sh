#!/usr/bin/env bash
# The whole test suite: set up with the test and export (ONNX) dependencies, then pytest (slow
# tests included).
#   TEST_WORKERS=2 bash scripts/test.sh [pytest options, e.g. -m "not slow"]
# Tests run in TEST_WORKERS processes side by side (pytest-xdist; default 2, 0 for one
# process): many tests wait on worker processes, heartbeats and grace periods.
set -euo pipefail
cd "$(dirname "$0")/.."
# The storage tests start their own PostgreSQL server on 127.0.0.1; the dashboard test drives
# headless Chromium through Debian's chromedriver (Selenium comes with the test extra).
APT_NEEDS="postgresql=/usr/lib/postgresql/*/bin/initdb chromium=/usr/bin/chromium chromium-driver=/usr/bin/chromedriver" \
  EXTRAS=test,export source scripts/setup.sh
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" "$@"
