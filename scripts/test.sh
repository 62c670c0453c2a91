#!/usr/bin/env bash
# The whole test suite: set up with the test and export (ONNX) dependencies, then pytest (slow
# tests included).
#   bash scripts/test.sh [pytest options, e.g. -m "not slow"]
set -euo pipefail
cd "$(dirname "$0")/.."
# The storage tests start their own PostgreSQL server on 127.0.0.1; the dashboard test drives
# headless Chromium through Debian's chromedriver (Selenium comes with the test extra).
APT_NEEDS="postgresql=/usr/lib/postgresql/*/bin/initdb chromium=/usr/bin/chromium chromium-driver=/usr/bin/chromedriver" \
  EXTRAS=test,export source scripts/setup.sh
.venv/bin/python -m pytest "$@"
