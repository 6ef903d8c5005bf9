"""SPEC §7 steps 1-5 with their effects: log the body, store the verdict, count, audit.

Two layouts (docs/server.md):

* the ledger (default, ``_ingest_ledger``): judge first (pure), then the inbox record,
  the outcome (first-write-wins) and its audit entry in ONE group commit; nothing is
  answered before it is durable, and a crash leaves all of it or none;
* with ``--dedup URL`` (``_ingest``): the body is appended to the inbox WAL first, then
  judged and stored with one atomic ``put_if_absent``; the WAL record is acked once its
  fate is final and re-judged by the replay otherwise (``replay.py``).

Stored dedup values are ``server.outcome`` records: status, content digest, CRC,
origin, body.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from flk_fast.errors import StorageError
from flk_fast.metrics import ServerMetrics
from flk_fast.protocol.verify import VerifyResult
from flk_fast.storage.ledger import LedgerItem

from .answers import ENC, JSON_HEADERS, json_error
from .config import ServerConfig, redact
from .keys import KeyStore, UnknownTenantError
from .outcome import DamagedOutcomeError, decode_outcome, encode_outcome, server_id

__all__ = [
    "AuditSpoolError",
    "Pipeline",
    "crash_hook",
    "frame_record",
    "unframe_record",
]

if TYPE_CHECKING:
    from .handlers import Verdict

log = logging.getLogger("flk_fast.server")


def _conflict_body(pcs_id: str) -> bytes:
    return ENC.encode(
        {
            "error": "conflict",
            "pcs_id": pcs_id,
            "detail": "a PCS with this pcs_id and different content (SPEC §3.2) is "
            "already stored; a resend must repeat the same payload",
        }
    )


def frame_record(tenant: str, body: bytes) -> bytes:
    """WAL payload ``u8 len(tenant) | tenant | body``: replay knows whose key to use."""
    t = tenant.encode("ascii")  # TENANT_RE admits only ASCII
    return bytes((len(t),)) + t + body


def unframe_record(data: bytes) -> tuple[str, bytes]:
    n = data[0]
    return data[1 : 1 + n].decode("ascii"), data[1 + n :]


def _crash_trigger() -> tuple[str, int]:
    """``FLK_TEST_CRASH_AT=POINT:N``: SIGKILL this process at the N-th pass through
    POINT (``after-insert``: an outcome stored, its audit entry and WAL ack not yet;
    ``in-commit``: a ledger batch written, its transaction not yet committed;
    ``after-commit``: a ledger batch durable, its answers not yet sent).
    For the crash tests only; unset, it costs one comparison per request."""
    point, _, n = os.environ.get("FLK_TEST_CRASH_AT", "").partition(":")
    return (point, int(n)) if point and n.isdigit() else ("", 0)


_CRASH_POINT, _CRASH_AFTER = _crash_trigger()


def crash_hook(point: str) -> Callable[[], None] | None:
    """A callable that crashes at ``point`` as ``FLK_TEST_CRASH_AT`` says, or None
    when that variable names another point (the usual case: no cost at all)."""
    return (lambda: _maybe_crash(point)) if point == _CRASH_POINT else None


def _maybe_crash(point: str) -> None:
    global _CRASH_AFTER
    if point == _CRASH_POINT:
        _CRASH_AFTER -= 1
        if _CRASH_AFTER <= 0:
            os.kill(os.getpid(), signal.SIGKILL)


class AuditSpoolError(StorageError):
    """The audit entry of a stored verdict could not be spooled (HTTP 503)."""


class Pipeline:
    """Steps 1-5 of ``IngestService`` (whose state they use)."""

    cfg: ServerConfig
    keys: KeyStore
    metrics: ServerMetrics
    wal: Any  # storage.aio.AsyncWal (the --dedup layout), else None
    dedup: Any  # a storage.base.DedupStore (the ledger too)
    ledger: Any  # storage.aio.AsyncLedger in the default layout, else None
    audit: Any  # storage.audit_postgres.AuditLog with --audit-dsn, else None
    damaged_outcomes: int
    _server_id: str
    _ttl: int
    _retry_after: dict[str, str]
    _requests: itertools.count[int]

    if TYPE_CHECKING:  # defined by IngestService and Replay

        def assess(self, tenant: str, body: bytes) -> Any: ...

        def _ack(self, seq: int) -> None: ...

    async def settle(
        self,
        tenant: str,
        body: bytes,
        verdict: Verdict,
        *,
        origin: bytes,
        count: bool = True,
    ) -> tuple[int, bytes]:
        """Make an assessed verdict final. Returns ``(status, response body)``.

        A 400 or 401 is only counted: never cached, never stored. A §6 verdict is
        stored with dedup and store as one atomic ``put_if_absent`` of its outcome
        (first-write-wins): a miss keeps ours, a hit hands back the stored
        bytes, which are what is answered, byte for byte (a concurrent twin on
        another process may have won; both then answer the same bytes). A hit of
        other content (SPEC §3.2) is answered 409 and changes nothing.

        ``origin`` names this request (``origin_of``) and is stored with the outcome.
        A hit that carries our own origin is our own insert from before a crash (the
        WAL record was never acked): the steps after the insert, the counters and the
        audit entry, are done now. The audit entry's id is the origin, so doing it a
        second time is a no-op in PostgreSQL.

        ``count=False`` (replay) moves only ``flk_accepted``/``flk_escalated``, and
        only when this verdict is the one stored: a 400, 401 or dedup hit of a
        replayed record was already counted when it was first answered.

        Raises ``DedupUnavailableError`` (-> 503; the WAL record stays unacked) and
        ``DamagedOutcomeError`` (-> 503: the stored outcome failed its checksum).
        """
        m = self.metrics
        result = verdict.result
        if result is None:
            if count:
                (m.invalid if verdict.status == 400 else m.signature_errors).inc()
            return verdict.status, verdict.body
        value = encode_outcome(verdict.status, verdict.digest, verdict.body, origin)
        winner, inserted = await self.dedup.put_if_absent(verdict.key, value, self._ttl)
        if inserted:
            if _CRASH_POINT:
                _maybe_crash("after-insert")
            await self._after_insert(tenant, body, result, origin)
            return verdict.status, verdict.body
        stored = self._peek_own(winner, origin)
        if stored is not None:
            await self._after_insert(tenant, body, result, origin)
            return stored
        return self._stored_answer(winner, verdict, result.pcs_id, count)

    def _peek_own(self, winner: bytes, origin: bytes) -> tuple[int, bytes] | None:
        """The stored ``(status, body)`` if it is our own insert from before a crash."""
        try:
            stored = decode_outcome(winner)
        except DamagedOutcomeError:
            return None  # _stored_answer counts and raises it
        return (stored.status, stored.body) if stored.origin == origin else None

    async def judge(
        self, tenant: str, body: bytes, seq: int, *, count: bool = True
    ) -> tuple[int, bytes]:
        """``assess`` then ``settle``: steps 2-5 for the body of WAL record ``seq``."""
        verdict = self.assess(tenant, body)
        origin = self.origin_of(seq)
        return await self.settle(tenant, body, verdict, origin=origin, count=count)

    def origin_of(self, seq: int) -> bytes:
        """``server id/inbox WAL/seq``: the request that WAL record ``seq`` of the
        inbox being served (or replayed) holds, as stored with its outcome."""
        return f"{self._sid()}/{self.wal.wal.path.name}/{seq}".encode("ascii")

    async def _after_insert(
        self, tenant: str, body: bytes, result: VerifyResult, origin: bytes
    ) -> None:
        m = self.metrics
        if result.accepted:
            m.accepted.inc()
        if result.escalated:
            m.escalated.inc()
        if self.audit is not None:
            await self._audit(tenant, body, result, origin)

    async def _audit(
        self, tenant: str, body: bytes, result: VerifyResult, origin: bytes
    ) -> None:
        """Spool the verdict for the audit chain (only the stored one). The spool is a
        local WAL, so a PostgreSQL outage never delays or fails a request. A spool
        that cannot be written fails the request (503): its WAL record stays unacked,
        and the replay, finding its own origin in the store, spools the entry again.

        The entry id is the origin: the replay of a record whose entry was spooled
        but not acked spools the same id, which PostgreSQL keeps once."""
        try:
            await self.audit.record(self._entry(tenant, body, result, origin))
        except Exception as exc:
            self.metrics.wal_errors.inc()
            raise AuditSpoolError(f"audit spool append failed: {redact(exc)}") from exc

    def _audit_entry(
        self, tenant: str, body: bytes, result: VerifyResult, origin: bytes
    ) -> bytes:
        """The spool bytes of the audit entry of a verdict about to be stored (in the
        ledger's commit); ``AuditSpoolError`` if PostgreSQL could never take it."""
        from flk_fast.storage.audit_postgres import check_entry

        entry = self._entry(tenant, body, result, origin)
        try:
            check_entry(entry)
        except (TypeError, ValueError) as exc:
            self.metrics.wal_errors.inc()
            raise AuditSpoolError(f"audit entry refused: {exc}") from exc
        return entry.to_bytes()

    @staticmethod
    def _entry(tenant: str, body: bytes, result: VerifyResult, origin: bytes) -> Any:
        from flk_fast.storage.audit_postgres import AuditEntry

        return AuditEntry(
            pcs_id=result.pcs_id,
            accepted=result.accepted,
            escalated=result.escalated,
            received_at=time.time(),
            request_digest=hashlib.sha256(body).hexdigest(),
            reason=result.reason,
            tenant=tenant,
            recomputed_d_hat=result.recomputed_D_hat,
            recomputed_budget=result.recomputed_budget,
            entry_id=origin.decode("ascii"),
        )

    async def _ingest(self, tenant: str, body: bytes) -> web.Response:
        if self.ledger is not None:
            return await self._ingest_ledger(tenant, body)
        m = self.metrics
        try:
            seq = await self.wal.append(frame_record(tenant, body))
        except Exception:
            m.wal_errors.inc()
            log.exception("inbox WAL append failed")
            return json_error(503, "wal_unavailable", self._retry_after)
        m.ingest.inc()
        try:
            status, out = await self.judge(tenant, body, seq)
        except UnknownTenantError:
            self._ack(seq)
            m.signature_errors.inc()
            return json_error(
                401, "unknown_tenant", detail=self.keys.unknown_tenant_detail(tenant)
            )
        except DamagedOutcomeError as exc:
            # Never serve damaged bytes; the WAL record stays unacked, so a repaired
            # store (or a resend) gets the right answer later.
            log.error("dedup store: %s (pcs in WAL record %d)", exc, seq)
            return json_error(
                503, "stored_outcome_damaged", self._retry_after, detail=str(exc)
            )
        except AuditSpoolError as exc:
            log.error("%s (WAL record %d stays for the replay)", exc, seq)
            return json_error(503, "audit_unavailable", self._retry_after)
        except StorageError as exc:  # DedupUnavailableError, or a closed store
            m.dedup_errors.inc()
            log.warning("dedup store unavailable: %s", redact(exc))
            return json_error(503, "dedup_unavailable", self._retry_after)
        self._ack(seq)
        return web.Response(status=status, body=out, headers=JSON_HEADERS)

    async def _ingest_ledger(self, tenant: str, body: bytes) -> web.Response:
        """SPEC §7 with steps 1 and 5 in one commit: judge first (pure), then write
        the inbox record, the outcome and the audit entry in the ledger's next group
        commit; answer once it is durable. A crash leaves all three or none."""
        m = self.metrics
        try:
            verdict = self.assess(tenant, body)
        except UnknownTenantError:
            m.signature_errors.inc()
            return json_error(
                401, "unknown_tenant", detail=self.keys.unknown_tenant_detail(tenant)
            )
        ledger = self.ledger
        n = next(self._requests)
        result = verdict.result
        put = audit = None
        if result is not None:
            origin = ledger.store.origin(self._sid(), n)
            value = encode_outcome(verdict.status, verdict.digest, verdict.body, origin)
            put = ledger.store.prepare(verdict.key, value, self._ttl)
            if self.audit is not None:
                try:
                    audit = self._audit_entry(tenant, body, result, origin)
                except AuditSpoolError as exc:
                    log.error("%s", exc)
                    return json_error(503, "audit_unavailable", self._retry_after)
        item = LedgerItem(
            ledger.store.record_key(n), frame_record(tenant, body), put, audit
        )
        try:
            won = await ledger.commit(item)
        except StorageError as exc:
            m.wal_errors.inc()
            log.warning("ledger commit failed: %s", redact(exc))
            return json_error(503, "wal_unavailable", self._retry_after)
        if _CRASH_POINT:
            _maybe_crash("after-commit")
        m.ingest.inc()
        if result is None:
            (m.invalid if verdict.status == 400 else m.signature_errors).inc()
            return web.Response(
                status=verdict.status, body=verdict.body, headers=JSON_HEADERS
            )
        winner, inserted = won
        if inserted:
            if result.accepted:
                m.accepted.inc()
            if result.escalated:
                m.escalated.inc()
            if audit is not None:
                self.audit.spooled()
            return web.Response(
                status=verdict.status, body=verdict.body, headers=JSON_HEADERS
            )
        try:
            status, out = self._stored_answer(winner, verdict, result.pcs_id, True)
        except DamagedOutcomeError as exc:
            log.error("dedup store: %s (pcs_id %s)", exc, result.pcs_id)
            return json_error(
                503, "stored_outcome_damaged", self._retry_after, detail=str(exc)
            )
        return web.Response(status=status, body=out, headers=JSON_HEADERS)

    def _stored_answer(
        self, winner: bytes, verdict: Verdict, pcs_id: str, count: bool
    ) -> tuple[int, bytes]:
        """The answer to a dedup hit: the stored bytes, or 409 for a conflicting twin
        (SPEC §3.2). Raises ``DamagedOutcomeError`` (counted) for a damaged value."""
        m = self.metrics
        try:
            stored = decode_outcome(winner)
        except DamagedOutcomeError:
            m.dedup_damaged.inc()
            self.damaged_outcomes += 1
            raise
        if stored.digest is not None and stored.digest != verdict.digest:
            # SPEC §3.2: same pcs_id, other content. Neither stored nor answered
            # with the stored verdict, which would tell a forger what it says.
            if count:
                m.dedup_conflicts.inc()
            return 409, _conflict_body(pcs_id)
        if count:
            # A twin (a resend, or a concurrent request) stored first: its bytes.
            m.dedup_hits.inc()
        return stored.status, stored.body

    def _sid(self) -> str:
        if not self._server_id:
            self._server_id = server_id(self.cfg.data_dir)
        return self._server_id
