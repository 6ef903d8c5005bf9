"""flk_fast: verifiable summaries (PCS) of event streams.

Importing the package is cheap on purpose: it loads no numpy-heavy, numba, lmdb or
aiohttp module. Subpackages are imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    from ._version import __version__
except ImportError:  # running from a tree that was never built
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "agent", "kernels", "protocol", "server", "storage"]

_SUBPACKAGES = frozenset({"agent", "kernels", "protocol", "server", "storage"})


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
