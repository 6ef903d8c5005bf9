#!/usr/bin/env bash
# Set everything up from a fresh clone and run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -x tests/protocol
set -euo pipefail
cd "$(dirname "$0")/.."
export FLK_VENV="${FLK_VENV:-.venv-test}"
bash scripts/bootstrap.sh test
bash scripts/services.sh
export FLK_REQUIRE_SERVICES="${FLK_REQUIRE_SERVICES:-1}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba-cache}"
exec "$FLK_VENV/bin/python" -m pytest -p no:cacheprovider "$@"
