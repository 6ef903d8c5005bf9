"""The agent: events → windows → signed PCS → durable outbox → delivery (SPEC §7).

Names resolve lazily so that ``import flk_fast.agent`` loads neither aiohttp, lmdb nor
the kernels until they are used; a constrained host pays only for what it runs.
"""

from __future__ import annotations

from flk_fast._lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _EXPORTS)
