"""Delivering one outbox record, shared by ``flk agent`` (agent/runner.py) and
``flk outbox replay`` / ``flk dlq retry --endpoint`` (cli/agent.py): the client is
built here, each send is stamped here, an outcome is judged here (what counts as
escalated) and a failure is dead-lettered here, from the bytes and the PCS in hand.
"""

from __future__ import annotations

import os
from typing import Any

from flk_fast.agent.client import DeliveryClient, DeliveryResult, tls_context
from flk_fast.agent.outbox import Outbox, stamp, utc_now
from flk_fast.agent.retry import RetryPolicy
from flk_fast.protocol.pcs import PCS

__all__ = ["dead_letter", "escalated", "make_client", "send", "verdict"]

#: The longest escalation reason kept with an ack (a server's reasons are short).
_MAX_REASON = 200


def make_client(
    endpoint: str,
    *,
    policy: RetryPolicy,
    concurrency: int,
    timeout_s: float,
    tenant_id: str | None = None,
    tls_ca_file: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    **test_hooks: Any,
) -> DeliveryClient:
    """The one place a delivery client is made from options; raises ConfigError."""
    return DeliveryClient(
        endpoint,
        policy=policy,
        concurrency=concurrency,
        timeout_s=timeout_s,
        headers={"X-Tenant-Id": tenant_id} if tenant_id else None,
        # Built once here: every connection of the run shares it.
        ssl_context=tls_context(tls_ca_file, tls_cert, tls_key),
        **test_hooks,
    )


async def send(client: DeliveryClient, seq: int, pcs: PCS) -> DeliveryResult:
    """Submit outbox record ``seq``; every attempt is stamped with its number and
    time (fields outside the signature)."""

    def body(attempt: int) -> bytes:
        return stamp(pcs, outbox_seq=seq, attempt=attempt, sent_at=utc_now())

    return await client.submit(body)


def escalated(result: DeliveryResult) -> bool:
    """An acknowledged PCS the server escalated: its verdict says so, or (no verdict
    JSON) it answered 202."""
    if result.escalated is not None:
        return result.escalated
    return result.status == 202


def verdict(result: DeliveryResult) -> bytes:
    """What is kept with the ack of an acknowledged PCS (``flk outbox list/show``):
    ``{"verdict": "accepted"|"escalated", "status": N[, "reason": …]}`` as JSON, a
    few dozen bytes, by the same rule as :func:`escalated`."""
    import msgspec

    doc: dict[str, Any] = {
        "verdict": "escalated" if escalated(result) else "accepted",
        "status": result.status,
    }
    if result.verdict_reason:
        doc["reason"] = result.verdict_reason[:_MAX_REASON]
    return msgspec.json.encode(doc)


def dead_letter(
    outbox: Outbox, seq: int, body: bytes, pcs: PCS | None, result: DeliveryResult
) -> None:
    """Move record ``seq`` to the DLQ with why (call on the outbox's thread)."""
    outbox.dead_letter(
        seq,
        body,
        status=result.status,
        reason=result.reason,
        attempts=result.attempts,
        response=result.body,
        transient=result.transient,
        pcs=pcs,
    )
