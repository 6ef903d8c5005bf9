"""Every FLK_FAST_* runtime switch, read once at import time.

Build switches (FLK_FAST_DEBUG, FLK_FAST_SANITIZE, FLK_FAST_CYTHON_TRACE) are read by
setup.py; they are listed here too so that ``flk --version`` can report them.
"""

from __future__ import annotations

import os

__all__ = ["BUILD_SWITCHES", "NO_EXTENSIONS", "NUM_THREADS", "settings"]

BUILD_SWITCHES = ("FLK_FAST_DEBUG", "FLK_FAST_SANITIZE", "FLK_FAST_CYTHON_TRACE")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


#: Force the pure-Python twins (Merkle) instead of the compiled kernels.
NO_EXTENSIONS: bool = _flag("FLK_FAST_NO_EXTENSIONS")
#: Threads the parallel kernels may use; 0 means one per core.
NUM_THREADS: int = int(os.environ.get("FLK_FAST_NUM_THREADS", "0") or 0)


def settings() -> dict[str, str]:
    """Return every FLK_FAST_* variable that is set, for reports and benchmarks."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("FLK_FAST_")}
