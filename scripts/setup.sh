#!/usr/bin/env bash
# Idempotent set-up, sourced by run.sh and test.sh: a .venv at the repository root with the
# project installed, and Fashion-MNIST present and verified.
#   EXTRAS=test   also install the test dependencies
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11 or newer is needed as \$PYTHON (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# Reinstall only when pyproject.toml changed since the last install with these extras.
stamp=".venv/.installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi

# Data: an explicit FMNIST_DATA_DIR, Debian's package, or torchvision's download into ./data.
debian=/usr/share/datasets/fashion-mnist
if [ -z "${FMNIST_DATA_DIR:-}" ] && [ ! -f "$debian/train-images-idx3-ubyte.gz" ] \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
.venv/bin/fmnist-search data
