"""The ingest server (``flk serve``): aiohttp + uvloop over protocol core and storage.

``make_app(cfg)`` builds the application without side effects; ``runner.serve(cfg)``
runs it. Names resolve lazily so that ``server.config`` (used by ``flk --help``) does
not pull in aiohttp.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ServerConfig": "config",
    "load_config": "config",
    "make_app": "app",
    "serve": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
