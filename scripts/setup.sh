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

# System packages (Debian): the data set, plus whatever the caller lists in APT_NEEDS as
# "package=file-it-installs" pairs (test.sh asks for PostgreSQL). One apt-get update, only when
# something is missing, and only as root.
debian=/usr/share/datasets/fashion-mnist
needs="${APT_NEEDS:-}"
[ -z "${FMNIST_DATA_DIR:-}" ] && needs="dataset-fashion-mnist=$debian/train-images-idx3-ubyte.gz $needs"
missing=()
for pair in $needs; do
  pkg=${pair%%=*}; file=${pair#*=}
  compgen -G "$file" >/dev/null || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: missing Debian packages ${missing[*]} (install them as root with apt-get)" >&2
  fi
fi
# Finds and verifies the data; without Debian's package it downloads with torchvision.
.venv/bin/fmnist-search data
