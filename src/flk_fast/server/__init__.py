"""The ingest server (``flk serve``): aiohttp + uvloop over protocol core and storage.

``make_app(cfg)`` builds the application without side effects; ``runner.serve(cfg)``
runs it. Names resolve lazily so that ``server.config`` (used by ``flk --help``) does
not pull in aiohttp.
"""

from __future__ import annotations

from flk_fast._lazy import lazy_getattr

_EXPORTS = {
    "ServerConfig": "config",
    "load_config": "config",
    "make_app": "app",
    "serve": "runner",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
