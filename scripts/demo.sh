#!/usr/bin/env bash
# Set everything up from a fresh clone and run the main job on the embedded default:
# `flk serve` on LMDB plus an `flk agent` feeding it a generated event stream.
# Extra arguments go to `flk demo`, e.g. scripts/demo.sh --events 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
export FLK_VENV="${FLK_VENV:-.venv-run}"
bash scripts/bootstrap.sh
exec "$FLK_VENV/bin/flk" demo "$@"
