"""flk_fast: verifiable summaries (PCS) of event streams.

Importing the package is cheap on purpose: it loads no numpy-heavy, numba, lmdb or
aiohttp module. Subpackages are imported on first attribute access.
"""

from __future__ import annotations

from ._lazy import lazy_getattr

try:
    from ._version import __version__
except ImportError:  # running from a tree that was never built
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "agent", "kernels", "protocol", "server", "storage"]

__getattr__ = lazy_getattr(
    __name__, dict.fromkeys(("agent", "kernels", "protocol", "server", "storage"), "")
)
