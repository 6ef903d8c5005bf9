#!/usr/bin/env bash
# The install steps of the container image (Dockerfile); tests/deploy/test_image.py runs
# them for real in a fresh venv, so the image runs what CI ran.
#   scripts/install-flk.sh wheels OUTDIR        build stage: the flk_fast wheel (compiled
#                                               Cython kernels) plus a wheel of every
#                                               dependency, into OUTDIR
#   scripts/install-flk.sh runtime WHEELS VENV  runtime stage: a fresh venv VENV with
#                                               flk_fast from WHEELS only (no index, no
#                                               compiler), then a smoke check
# The version comes from git, else from $FLK_VERSION (the image has no .git).
set -euo pipefail
usage() { echo "usage: $0 wheels OUTDIR | runtime WHEELS VENV" >&2; exit 2; }
pip_opts=(-q --disable-pip-version-check --no-cache-dir)
case "${1:-}" in
  wheels)
    [ $# -eq 2 ] || usage
    src="$(cd "$(dirname "$0")/.." && pwd)"
    if [ -n "${FLK_VERSION:-}" ]; then export SETUPTOOLS_SCM_PRETEND_VERSION_FOR_FLK_FAST="$FLK_VERSION"; fi
    mkdir -p "$2"
    python3 -m pip wheel "${pip_opts[@]}" --wheel-dir "$2" "$src"
    ;;
  runtime)
    [ $# -eq 3 ] || usage
    compgen -G "$2/flk_fast-*.whl" >/dev/null || { echo "install-flk: no flk_fast wheel in $2" >&2; exit 1; }
    python3 -m venv "$3"
    "$3/bin/python" -m pip install "${pip_opts[@]}" --no-index --find-links "$2" flk_fast
    # Fails when the wheel lost its compiled kernels (a pure build would be ~100x slower).
    "$3/bin/python" -c 'import flk_fast.kernels._boxcount_cy' || \
      { echo "install-flk: the installed flk_fast has no compiled kernels" >&2; exit 1; }
    "$3/bin/flk" --version
    ;;
  *) usage ;;
esac
