"""The ingest service of SPEC §7: ``IngestService`` and its HTTP handlers.

One class owns the state; its parts live beside it (docs/server.md has the order):
``admission.py`` (step 0: refusals that need no body), the judge (``assess``: steps 2-5
without effects), ``pipeline.py`` (steps 1-5 with their effects: log, store, count,
audit), ``replay.py`` (WAL acks and the replay of unacked records). Here: the submit
handler that strings them together, ``/health``, ``/ready`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import logging
from typing import Any

from aiohttp import web

from flk_fast.errors import StorageError
from flk_fast.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from flk_fast.protocol.verify import VerifyParams

from .admission import Admission
from .answers import ENC as _ENC
from .answers import JSON_HEADERS as _JSON_HEADERS
from .answers import body_error as _body_error
from .answers import json_error
from .bodies import BodyError, read_body
from .config import ServerConfig, redact
from .judge import Judge, Verdict, dedup_key
from .keys import KeyStore
from .pipeline import (
    AuditSpoolError,
    Pipeline,
    crash_hook,
    frame_record,
    unframe_record,
)
from .ratelimit import RateLimiter
from .replay import Replay

__all__ = [
    "AuditSpoolError",
    "IngestService",
    "crash_hook",
    "Verdict",
    "dedup_key",
    "frame_record",
    "json_error",
    "unframe_record",
]

log = logging.getLogger("flk_fast.server")


class IngestService(Admission, Pipeline, Replay):
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
        #: storage.aio.AsyncLedger in the embedded layout (the default): inbox record,
        #: outcome and audit entry of a request go down in one commit.
        self.ledger: Any = None
        self._requests = itertools.count(1)
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

    # ------------------------------------------------------------------ handlers
    async def submit(self, request: web.Request) -> web.StreamResponse:
        admitted = self.admit(request)
        if not isinstance(admitted, str):
            return admitted
        tenant = admitted
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
