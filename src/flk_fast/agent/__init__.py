"""The agent: events → windows → signed PCS → durable outbox → delivery (SPEC §7).

Names resolve lazily so that ``import flk_fast.agent`` loads neither aiohttp, lmdb nor
the kernels until they are used; a constrained host pays only for what it runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Agent": "runner",
    "AgentConfig": "runner",
    "AgentSummary": "runner",
    "DeadLetter": "outbox",
    "DeliveryClient": "client",
    "DeliveryResult": "client",
    "Outbox": "outbox",
    "RetryPolicy": "retry",
    "delays": "retry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
