"""Request handlers: the SPEC §7 ingest pipeline, replay, health, readiness, metrics.

The order of ``POST /v1/pcs/submit`` (SPEC §7):

0. Cheap refusals that need no body: 405, 415, 413 from ``Content-Length``, 401 for an
   unknown ``X-Tenant-Id``, 429, 503 while loading. None of them can ever be judged,
   so they are not logged to the WAL (which also keeps floods off the disk).
1. Read the body (``bodies.read_body``: inflated in bounded steps, 413 once it outgrows
   ``max_body`` as sent or decoded) and append it to the
   inbox WAL; the append returns only once the record is fsynced (group commit in
   ``storage.aio``). From here the request is never lost.
2-5. ``assess`` (pure): parse and shape-check (-> 400 naming the field), signature
   (-> 401), verify (SPEC §6). ``settle`` makes the verdict visible: a 400/401 is
   counted (never cached, never written to dedup); a §6 verdict is deduplicated and
   stored in one atomic ``put_if_absent`` of its outcome (first-write-wins): a
   hit hands back the stored bytes, a miss keeps ours; the answer is always the stored
   status and body, byte for byte (a concurrent twin on another process may have
   won; both then answer the same bytes). A hit whose content digest differs from
   ours is a conflicting twin (SPEC §3.2): 409, nothing stored, the stored verdict
   not revealed. A stored outcome that fails its checksum is never served: 503.
6. Ack the WAL record (batched, off the response path): a record is acked once its fate
   is final (400, 401, or an outcome in dedup). Unacked records are re-judged by
   :meth:`IngestService.replay` at start-up and by the maintenance task of ``app.py``;
   re-judging is idempotent because the store hands back an already-stored outcome.

Stored dedup values are ``server.outcome`` records: status, content digest, CRC, body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from flk_fast.errors import StorageError
from flk_fast.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from flk_fast.protocol.verify import VerifyParams, VerifyResult

from .bodies import DECODABLE, BodyError, UnsupportedEncodingError, read_body
from .config import ServerConfig, redact
from .judge import (  # noqa: F401 - re-exported: they lived here
    _MSGSPEC_PATH,
    _REFUSED_V01,
    EXPLAIN_MAX_BODY,
    Judge,
    Verdict,
    dedup_key,
)
from .keys import TENANT_RE, KeyStore, UnknownTenantError
from .outcome import DamagedOutcomeError, decode_outcome, encode_outcome, server_id
from .ratelimit import RateLimiter

__all__ = [
    "IngestService",
    "Verdict",
    "dedup_key",
    "frame_record",
    "json_error",
    "unframe_record",
]

log = logging.getLogger("flk_fast.server")

#: Write WAL acks at most this often (seconds) unless ACK_BATCH of them are waiting.
ACK_INTERVAL_S = 0.25
ACK_BATCH = 4096
#: Compact (delete) acked WAL records at most this often, right after an ack flush.
COMPACT_EVERY_S = 1.0
_JSON = "application/json"
_JSON_HEADERS = {"Content-Type": _JSON}
_ENC = msgspec.json.Encoder()


def _body_error(exc: BodyError) -> web.Response:
    """The answer to a body that could not be read (the error carries it)."""
    resp = json_error(exc.status, exc.error, **exc.fields)
    if exc.close:
        resp.force_close()  # the rest of the body is never read
    return resp


def _conflict_body(pcs_id: str) -> bytes:
    return _ENC.encode(
        {
            "error": "conflict",
            "pcs_id": pcs_id,
            "detail": "a PCS with this pcs_id and different content (SPEC §3.2) is "
            "already stored; a resend must repeat the same payload",
        }
    )


def json_error(
    status: int, error: str, headers: dict[str, str] | None = None, **fields: Any
) -> web.Response:
    """A JSON error response ``{"error": ..., **fields}``."""
    body = _ENC.encode({"error": error, **fields})
    h = dict(_JSON_HEADERS)
    if headers:
        h.update(headers)
    return web.Response(status=status, body=body, headers=h)


def frame_record(tenant: str, body: bytes) -> bytes:
    """WAL payload ``u8 len(tenant) | tenant | body``: replay knows whose key to use."""
    t = tenant.encode("ascii")  # TENANT_RE admits only ASCII
    return bytes((len(t),)) + t + body


def unframe_record(data: bytes) -> tuple[str, bytes]:
    n = data[0]
    return data[1 : 1 + n].decode("ascii"), data[1 + n :]


def _crash_trigger() -> tuple[str, int]:
    """``FLK_TEST_CRASH_AT=POINT:N``: SIGKILL this process at the N-th pass through
    POINT (``after-insert``: an outcome stored, its audit entry and WAL ack not yet).
    For the crash tests only; unset, it costs one comparison per request."""
    point, _, n = os.environ.get("FLK_TEST_CRASH_AT", "").partition(":")
    return (point, int(n)) if point and n.isdigit() else ("", 0)


_CRASH_POINT, _CRASH_AFTER = _crash_trigger()


def _maybe_crash(point: str) -> None:
    global _CRASH_AFTER
    if point == _CRASH_POINT:
        _CRASH_AFTER -= 1
        if _CRASH_AFTER <= 0:
            os.kill(os.getpid(), signal.SIGKILL)


class AuditSpoolError(StorageError):
    """The audit entry of a stored verdict could not be spooled (HTTP 503)."""


class IngestService:
    """Owns the pipeline's collaborators; the app's handlers are its bound methods.

    ``wal`` is an ``AsyncWal`` (``append``, ``ack_many``, ``compact``) or None while it
    is being opened; ``dedup`` a ``DedupStore``. The app's start-up hook sets both.
    """

    def __init__(
        self,
        cfg: ServerConfig,
        keys: KeyStore,
        metrics: ServerMetrics,
        limiter: RateLimiter,
        params: VerifyParams | None = None,
    ) -> None:
        self.cfg = cfg
        self.keys = keys
        self.metrics = metrics
        self.limiter = limiter
        self.params = params or VerifyParams()
        self.wal: Any = None
        self.dedup: Any = None
        self.audit: Any = (
            None  # storage.audit_postgres.AuditLog when --audit-dsn is set
        )
        self.ready = False
        self.loading_reason = "starting"
        self.replayed_at_start = 0
        self.draining = False
        #: Set (with a reason) when start-up failed for good; the runner then exits 1.
        self.fatal = ""
        #: time.monotonic() by which a SIGTERM drain must be over (set by the runner).
        self.drain_deadline: float | None = None
        #: Stored outcomes that failed their checksum since start (shown in /ready).
        self.damaged_outcomes = 0
        self._server_id = ""
        self._refuse_v01 = cfg.refuse_sig_v01
        self._judge = Judge(keys, self.params, cfg.refuse_sig_v01)
        self._retry_after = {"Retry-After": str(cfg.retry_after_s)}
        self._max_body = cfg.max_body
        self._ttl = cfg.dedup_ttl_s
        self._acks: list[int] = []
        self._ack_now = asyncio.Event()
        self._flush_all = False
        self._last_compact = 0.0
        self._ack_task: asyncio.Task[None] | None = None
        self._inflight = 0
        self._reading = 0  # bodies being uploaded right now
        self._max_reading = cfg.max_inflight_bodies
        self._body_timeout = cfg.body_timeout_s
        self._idle = asyncio.Event()

    # ------------------------------------------------------------------ judging
    def assess(self, tenant: str, body: bytes) -> Verdict:
        """Steps 2-5 without their effects: parse, check the signature, run the §6
        engine. Pure (no store, no metric); ``settle`` makes the result visible.

        Raises ``UnknownTenantError`` (a tenant removed by a key reload).
        """
        return self._judge(tenant, body)

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
        try:
            stored = decode_outcome(winner)
        except DamagedOutcomeError:
            m.dedup_damaged.inc()
            self.damaged_outcomes += 1
            raise
        if stored.origin == origin:
            await self._after_insert(tenant, body, result, origin)
            return stored.status, stored.body
        if stored.digest is not None and stored.digest != verdict.digest:
            # SPEC §3.2: same pcs_id, other content. Neither stored nor answered
            # with the stored verdict, which would tell a forger what it says.
            if count:
                m.dedup_conflicts.inc()
            return 409, _conflict_body(result.pcs_id)
        if count:
            # A twin (a resend, or a concurrent request) stored first: its bytes.
            m.dedup_hits.inc()
        return stored.status, stored.body

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
        if not self._server_id:
            self._server_id = server_id(self.cfg.data_dir)
        return f"{self._server_id}/{self.wal.wal.path.name}/{seq}".encode("ascii")

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
        from flk_fast.storage.audit_postgres import AuditEntry

        try:
            await self.audit.record(
                AuditEntry(
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
            )
        except Exception as exc:
            self.metrics.wal_errors.inc()
            raise AuditSpoolError(f"audit spool append failed: {redact(exc)}") from exc

    # ------------------------------------------------------------------ handlers
    async def submit(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return json_error(405, "method_not_allowed", {"Allow": "POST"})
        headers = request.headers
        ctype = headers.get("Content-Type")
        if ctype != _JSON and request.content_type != _JSON:
            return json_error(415, "unsupported_media_type", expected=_JSON)
        cenc = (headers.get("Content-Encoding") or "").strip().lower()
        if cenc and cenc not in DECODABLE:
            # Refused before the body: read_body would say the same after reading it.
            return _body_error(UnsupportedEncodingError(cenc))
        clen = request.content_length
        if clen is not None and clen > self._max_body:
            return json_error(413, "body_too_large", limit=self._max_body)
        tenant = self.keys.tenant_of(headers.get("X-Tenant-Id", ""))
        if (
            tenant
            and TENANT_RE.fullmatch(tenant) is None
            or not self.keys.known(tenant)
        ):
            self.metrics.signature_errors.inc()
            return json_error(
                401, "unknown_tenant", detail=self.keys.unknown_tenant_detail(tenant)
            )
        if tenant and not self.keys.multi_tenant:
            # Only --sign-alg none lets a tenant header through without a tenants
            # directory; it names no keyring there, so it must not pick a rate bucket
            # (a fresh header per request would dodge the limit and grow the table)
            # nor a dedup namespace.
            tenant = ""
        if self.limiter.enabled:
            wait = self.limiter.check(tenant)
            if wait:
                self.metrics.rate_limited.inc()
                return json_error(429, "rate_limited", {"Retry-After": str(wait)})
        if not self.ready:
            return json_error(
                503, "unavailable", self._retry_after, detail=self.loading_reason
            )
        if self._reading >= self._max_reading:
            # Slow uploads hold a connection and a buffer each: cap how many bodies
            # may be arriving at once, so trickling clients cannot starve the rest.
            resp = json_error(503, "too_many_uploads", self._retry_after)
            resp.force_close()
            return resp
        # In flight from here: a body still being uploaded counts, so a SIGTERM drain
        # (runner.py) waits for it instead of dropping it.
        self._inflight += 1
        self._reading += 1
        try:
            try:
                body = await read_body(request, self._max_body, self._body_timeout)
            except BodyError as exc:
                if exc.status == 400 and exc.error == "invalid_body":
                    self.metrics.invalid.inc()
                return _body_error(exc)
            finally:
                self._reading -= 1
            resp = await self._ingest(tenant, body)
            if self.draining:
                resp.force_close()  # no keep-alive: let the client reconnect elsewhere
            return resp
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def _ingest(self, tenant: str, body: bytes) -> web.Response:
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
        return web.Response(status=status, body=out, headers=_JSON_HEADERS)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def ready_check(self, request: web.Request) -> web.Response:
        if not self.ready:
            return json_error(
                503, "not_ready", self._retry_after, detail=self.loading_reason
            )
        try:
            await asyncio.wait_for(self.dedup.ping(), 2.0)
        except (StorageError, TimeoutError, OSError) as exc:
            cause = redact(exc) if str(exc) else "no answer within 2 s"
            return json_error(
                503, "not_ready", self._retry_after, detail=f"dedup: {cause}"
            )
        warnings = self.warnings()
        if not warnings:
            return web.Response(body=b'{"status":"ready"}', headers=_JSON_HEADERS)
        body = _ENC.encode({"status": "ready", "warnings": warnings})
        return web.Response(body=body, headers=_JSON_HEADERS)

    def warnings(self) -> list[str]:
        """What an operator should know while the server still serves (``/ready``)."""
        out = []
        note = getattr(self.dedup, "durability_note", "")
        if note:
            out.append(f"dedup: {note}")
        if self.damaged_outcomes:
            out.append(
                f"dedup: {self.damaged_outcomes} stored outcome(s) failed their "
                "checksum since start and were answered 503 (flk_dedup_damaged_total;"
                " see the error log for their WAL records)"
            )
        return out

    async def metrics_page(self, request: web.Request) -> web.Response:
        user = self.cfg.metrics_user
        if user and not _basic_auth_ok(request, user, self.cfg.metrics_password):
            return web.Response(
                status=401,
                text="authentication required",
                headers={"WWW-Authenticate": 'Basic realm="metrics"'},
            )
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # ------------------------------------------------------------------ WAL acks
    def _ack(self, seq: int) -> None:
        # Acks only shorten the next replay, and every ack transaction is an fsync on
        # the WAL's one writer thread, queued in front of the appends that requests are
        # waiting for. So they are collected and written rarely: one transaction per
        # ACK_INTERVAL_S (or ACK_BATCH acks), nobody waiting for it.
        self._acks.append(seq)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.get_running_loop().create_task(self._flush_acks())
        elif len(self._acks) >= ACK_BATCH:
            self._ack_now.set()

    async def _flush_acks(self) -> None:
        while self._acks:
            if not self._flush_all and len(self._acks) < ACK_BATCH:
                self._ack_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ack_now.wait(), ACK_INTERVAL_S)
            batch, self._acks = self._acks, []
            try:
                await self.wal.ack_many(batch)
                now = time.monotonic()
                if now - self._last_compact >= COMPACT_EVERY_S:
                    # Delete every acked record right away: it is final, and small
                    # frequent runs keep each one short (the appends queue behind it
                    # on the WAL writer thread). Scanning only acked-and-deletable
                    # records also keeps a run's cost proportional to its work.
                    self._last_compact = now
                    await self.wal.compact(0.0)
            except Exception:
                # Unacked records are only re-judged at the next start: harmless.
                self.metrics.wal_errors.inc()
                log.exception(
                    "inbox WAL ack/compaction failed (%d records)", len(batch)
                )

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight pipelines (bounded) and for the last acks."""
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        self._flush_all = True  # the ack flusher stops waiting for a full batch
        self._ack_now.set()
        try:
            if self._ack_task is not None:
                await asyncio.wait(
                    {self._ack_task}, timeout=max(0.5, deadline - time.monotonic())
                )
        finally:
            self._flush_all = False

    # ------------------------------------------------------------------ replay
    async def replay(
        self,
        records: Callable[[], Awaitable[list[tuple[int, bytes]]]],
        concurrency: int = 64,
        *,
        drain: bool = True,
    ) -> int:
        """Re-judge unacked WAL records; ``records()`` yields the next chunk (empty at
        the end). Returns how many were judged to a final state."""
        judged = 0
        sem = asyncio.Semaphore(concurrency)

        async def one(seq: int, data: bytes) -> None:
            nonlocal judged
            async with sem:
                try:
                    tenant, body = unframe_record(data)
                except (IndexError, UnicodeDecodeError):
                    self._ack(seq)  # not our framing: can never be judged
                    return
                try:
                    await self.judge(tenant, body, seq, count=False)
                except UnknownTenantError:
                    pass
                except DamagedOutcomeError as exc:
                    # Left unacked and start-up goes on: one damaged value must not
                    # hold every other record (and the port) hostage.
                    log.error("replay of WAL record %d: %s", seq, exc)
                    return
                except StorageError:
                    raise  # the store is down: start-up retries the whole replay
                except Exception:
                    # A bug must not block start-up forever; the record stays unacked
                    # and is tried again at the next start.
                    log.exception("replay of WAL record %d failed", seq)
                    return
                self._ack(seq)
                self.metrics.replayed.inc()
                judged += 1

        while True:
            chunk = await records()
            if not chunk:
                break
            await asyncio.gather(*(one(s, d) for s, d in chunk))
        if drain:
            await self.drain(5.0)
        return judged


def _basic_auth_ok(request: web.Request, user: str, password: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        got = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{user}:{password}".encode()
    return hmac.compare_digest(got, expected)
