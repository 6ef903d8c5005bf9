"""Every FLK_FAST_* switch, read and validated once at import time.

A bad value (``FLK_FAST_NUM_THREADS=abc``, ``FLK_FAST_NO_EXTENSIONS=maybe``) or an
unknown ``FLK_FAST_*`` name (a typo would otherwise be ignored silently) raises
:class:`~flk_fast.errors.ConfigError` naming the variable and what it accepts, the
first time anything imports this module (every kernel does, through its wrapper).

Build switches (FLK_FAST_DEBUG, FLK_FAST_SANITIZE, FLK_FAST_CYTHON_TRACE,
FLK_FAST_OPENMP) are read by setup.py, which accepts the same boolean spellings; they
are validated here too so that ``flk --version`` reports them honestly (and a shell
that exported FLK_FAST_OPENMP=0 for a build is not refused at run time).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flk_fast.errors import ConfigError

__all__ = [
    "BUILD_SWITCHES",
    "NO_EXTENSIONS",
    "NUM_THREADS",
    "RUNTIME_SWITCHES",
    "parse_flag",
    "read",
    "settings",
]

BUILD_SWITCHES = (
    "FLK_FAST_DEBUG",
    "FLK_FAST_SANITIZE",
    "FLK_FAST_CYTHON_TRACE",
    "FLK_FAST_OPENMP",
)
RUNTIME_SWITCHES = ("FLK_FAST_NO_EXTENSIONS", "FLK_FAST_NUM_THREADS")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def parse_flag(name: str, text: str) -> bool:
    """A boolean switch: one of 1/true/yes/on or 0/false/no/off/empty (any case).

    Examples
    --------
    >>> parse_flag("FLK_FAST_NO_EXTENSIONS", " Yes ")
    True
    """
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"{name}={text!r} is not a boolean; use one of "
        f"{', '.join(_TRUE)} (on) or {', '.join(v for v in _FALSE if v)} (off)"
    )


def _parse_threads(name: str, text: str) -> int:
    value = text.strip()
    if value == "":
        return 0
    try:
        n = int(value, 10)
    except ValueError:
        n = -1
    if n < 0:
        raise ConfigError(
            f"{name}={text!r} is not a thread count; use an integer >= 0 "
            "(0 = one thread per core)"
        )
    return n


def read(environ: Mapping[str, str]) -> tuple[bool, int]:
    """``(NO_EXTENSIONS, NUM_THREADS)`` from ``environ``, after checking every
    ``FLK_FAST_*`` entry in it (ConfigError on the first bad one)."""
    known = RUNTIME_SWITCHES + BUILD_SWITCHES
    for key in sorted(environ):
        if key.startswith("FLK_FAST_") and key not in known:
            raise ConfigError(
                f"{key} is not a flk_fast setting; known: {', '.join(known)}"
            )
    for key in BUILD_SWITCHES:
        parse_flag(key, environ.get(key, ""))
    no_ext = parse_flag(
        "FLK_FAST_NO_EXTENSIONS", environ.get("FLK_FAST_NO_EXTENSIONS", "")
    )
    threads = _parse_threads(
        "FLK_FAST_NUM_THREADS", environ.get("FLK_FAST_NUM_THREADS", "")
    )
    return no_ext, threads


#: Force the pure-Python twins (Merkle) instead of the compiled kernels;
#: NUM_THREADS: threads the parallel kernels may use, 0 meaning one per core.
NO_EXTENSIONS, NUM_THREADS = read(os.environ)


def settings() -> dict[str, str]:
    """Return every FLK_FAST_* variable that is set, for reports and benchmarks."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("FLK_FAST_")}
