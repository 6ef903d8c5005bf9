#!/usr/bin/env bash
# Create a virtualenv and install flk_fast (compiled, from a wheel, not the source tree).
# Usage: scripts/bootstrap.sh [EXTRAS]   (venv path: $FLK_VENV, default .venv-run)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FLK_VENV:-.venv-run}"
extras="${1:-}"
if ! command -v python3 >/dev/null || ! python3 -c 'import sys; assert sys.version_info >= (3, 11)'; then
  echo "flk_fast needs Python >= 3.11 on PATH as python3" >&2; exit 2
fi
if ! command -v cc >/dev/null; then
  apt-get update -qq && apt-get install -y -qq build-essential python3-dev >/dev/null
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check ".${extras:+[$extras]}"
"$venv/bin/python" -c 'import flk_fast.cli as c; print(c.version_text())'
