"""``make_app(cfg)``: the ingest application, built without side effects.

Nothing is opened, bound or started by :func:`make_app`; the stores are opened by the
app's cleanup context when a runner starts it, and closed (after a drain) when the
runner cleans it up. Replay of the inbox WAL runs in the background after start-up, so
the port answers at once: ``/health`` 200, ``/ready`` and submissions 503 + Retry-After
until the stores are open and the replay is done.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from flk_fast.metrics import ServerMetrics

from .bodies import HANDLER_ARGS
from .config import ServerConfig, redact
from .handlers import IngestService
from .keys import KeyStore
from .middleware import make_observer, not_found
from .ratelimit import RateLimiter

__all__ = ["SERVICE", "SUBMIT_PATH", "make_app", "openapi_document"]

log = logging.getLogger("flk_fast.server")

SUBMIT_PATH = "/v1/pcs/submit"
SERVICE: web.AppKey[IngestService] = web.AppKey("flk_service", IngestService)
_REPLAY_CHUNK = 256


@cache
def openapi_document() -> bytes:
    """The OpenAPI 3 document shipped in the package (``server/openapi.json``)."""
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


def make_app(
    cfg: ServerConfig,
    *,
    worker_index: int = 0,
    num_workers: int = 1,
    dedup: Any = None,
    metrics: ServerMetrics | None = None,
    keys: KeyStore | None = None,
) -> web.Application:
    """Build the application.

    Parameters
    ----------
    cfg : ServerConfig
    worker_index, num_workers : int
        This process's place among ``--workers``: it owns the inbox WAL
        ``DATA_DIR/inbox/w<index>``; worker 0 also replays WALs of workers that no
        longer exist (the worker count went down since the last run).
    dedup : DedupStore, optional
        An already-open store to use instead of opening ``cfg.dedup_url`` (tests). It is
        closed with the app all the same.
    metrics, keys : optional
        Injected collaborators (tests); built from ``cfg`` otherwise.

    Raises
    ------
    ConfigError, KeyLoadError
        The keys cannot be loaded (checked here so that a bad key fails fast).
    """
    metrics = metrics or ServerMetrics()
    keys = keys or KeyStore(cfg)
    share = max(1, num_workers)
    limiter = RateLimiter(
        cfg.rate_limit / share,
        max(1, cfg.rate_burst // share) if cfg.rate_burst else 0,
        cfg.tenant_rate_limit / share,
        max(1, cfg.tenant_rate_burst // share) if cfg.tenant_rate_burst else 0,
    )
    service = IngestService(cfg, keys, metrics, limiter)
    # client_max_size makes request.read() refuse bodies that outgrow the limit while
    # streaming (chunked, or a lying Content-Length). HANDLER_ARGS turns aiohttp's own
    # inflating off, in every runner: bodies.read_body inflates in bounded steps.
    # No middleware: every route is wrapped once by make_observer (request id,
    # latency, access log, JSON errors), so aiohttp runs no middleware chain.
    app = web.Application(client_max_size=cfg.max_body, handler_args=HANDLER_ARGS)
    app.on_response_prepare.append(_server_header)
    app[SERVICE] = service
    observed = make_observer(metrics, access=cfg.access_log)
    get = ("GET", "HEAD")
    app.router.add_route("*", SUBMIT_PATH, observed(SUBMIT_PATH, service.submit))
    for path, handler in (
        ("/health", service.health),
        ("/ready", service.ready_check),
        ("/metrics", service.metrics_page),
        ("/openapi.json", _openapi),
    ):
        app.router.add_route("*", path, observed(path, handler, get))
    app.router.add_route("*", "/{tail:.*}", observed("unmatched", not_found))
    app.cleanup_ctx.append(
        _lifecycle(cfg, service, worker_index, max(1, num_workers), dedup)
    )
    return app


#: Sent instead of aiohttp's ``Python/3.x aiohttp/3.y``, which tells a scanner which
#: known bugs to try. (aiohttp adds its own when the header is absent.)
SERVER_HEADER = "flk"


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=openapi_document(), headers={"Content-Type": "application/json"}
    )


def _inbox_dir(cfg: ServerConfig, index: int) -> Path:
    return Path(cfg.data_dir) / "inbox" / f"w{index}"


def _open_ledger(cfg: ServerConfig, index: int) -> Any:
    """The embedded store (``DATA_DIR/ledger``), shared by every worker."""
    from flk_fast.storage.aio import AsyncLedger
    from flk_fast.storage.ledger import Ledger, ledger_path

    from .handlers import crash_hook

    # server-id is made at the first start once this open is durable (_bring_up), so
    # its presence says the ledger held data, whatever data.mdb now looks like.
    used = (Path(cfg.data_dir) / "server-id").exists()
    ledger = Ledger(
        ledger_path(cfg.data_dir), worker=index, sync=cfg.wal_sync, used=used
    )
    ledger.before_commit = crash_hook("in-commit")
    return AsyncLedger(ledger)


def _lifecycle(
    cfg: ServerConfig, service: IngestService, index: int, workers: int, dedup: Any
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        from flk_fast.storage.aio import AsyncWal
        from flk_fast.storage.wal_lmdb import LmdbWal

        embedded = dedup is None and not cfg.dedup
        if embedded:
            service.ledger = _open_ledger(cfg, index)
        else:
            wal = LmdbWal(
                _inbox_dir(cfg, index),
                sync=cfg.wal_sync,
                rotate_daily=True,
                retention_days=14,
            )
            service.wal = AsyncWal(wal)
        if cfg.audit_dsn:
            from flk_fast.storage.audit_postgres import AuditLog

            # One spool per worker, like the inbox: a spool belongs to one AuditLog.
            # In the ledger it is a database of the ledger, written in its commits.
            spool = Path(cfg.data_dir) / "audit-spool" / f"w{index}"
            if embedded:  # only its quarantine WAL lives there (spool/quarantine)
                spool = Path(cfg.data_dir) / "ledger" / f"audit-w{index}"
            service.audit = AuditLog(
                cfg.audit_dsn,
                spool,
                spool=service.ledger.spool if embedded else None,
            )
        quiet = _BadHttpFilter(service)
        aiohttp_log = logging.getLogger("aiohttp.server")
        aiohttp_log.addFilter(quiet)
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(_bring_up(cfg, service, index, workers, dedup)),
            loop.create_task(_maintenance(service)),
        ]
        try:
            yield
        finally:
            service.ready = False
            service.loading_reason = "shutting down"
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The runner's SIGTERM drain already spent part of drain_timeout_s: only
            # what is left of it (the last acks still get their short flush).
            left = cfg.drain_timeout_s
            if service.drain_deadline is not None:
                left = max(0.0, service.drain_deadline - time.monotonic())
            await service.drain(left)
            if service.wal is not None:
                await _maybe_await(service.wal.close())
            if service.audit is not None:
                await service.audit.close()  # ships what it can, keeps the rest spooled
            if service.dedup is not None:  # the ledger too, after the audit log's spool
                await service.dedup.close()
            elif service.ledger is not None:
                await service.ledger.close()
            aiohttp_log.removeFilter(quiet)

    return ctx


class _BadHttpFilter(logging.Filter):
    """aiohttp logs every request its HTTP parser rejects (bad request line, header,
    chunking...) at error level with a multi-KB traceback, so junk traffic floods the
    log. Count those in ``flk_bad_http`` instead and log one short debug line; other
    aiohttp errors pass unchanged."""

    def __init__(self, service: IngestService) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self._service.metrics.bad_http.inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "malformed HTTP request: %s",
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                extra={"event": "bad_http"},
            )
        return False


async def _maybe_await(x: Any) -> Any:
    return await x if inspect.isawaitable(x) else x


async def _bring_up(
    cfg: ServerConfig, service: IngestService, index: int, workers: int, dedup: Any
) -> None:
    """Open the dedup store (retrying while it is down), replay, then go ready; any
    other failure is fatal (``service.fatal``)."""
    try:
        await _bring_up_inner(cfg, service, index, workers, dedup)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # Not a store that is down (retried inside) but a bug or a configuration the
        # store refuses: waiting would leave /ready 503 forever with nothing said, so
        # log it and let the runner stop the process with a non-zero exit.
        from flk_fast.errors import FlkError

        why = cause(exc, cfg.dedup_url)
        if not isinstance(exc, FlkError):  # a bug: its class says what it is
            why = f"{type(exc).__name__}: {why}"
        log.error("start-up failed: %s", why, extra={"event": "fatal"})
        service.loading_reason = "start-up failed"
        service.fatal = why


async def _bring_up_inner(
    cfg: ServerConfig, service: IngestService, index: int, workers: int, dedup: Any
) -> None:
    from flk_fast.errors import DedupUnavailableError, LmdbDamagedError, StorageError

    # DATA_DIR/server-id, read (or made) before anything is judged: read lazily, a
    # damaged one failed every judged request with a 500 while /ready said ready.
    # After the ledger's open, which needs to know whether it existed before.
    try:
        service._sid()
    except OSError as exc:
        sid = Path(cfg.data_dir) / "server-id"
        raise StorageError(
            f"{sid} cannot be read or made: {exc.strerror or exc}"
        ) from None
    delay = 0.2
    checked = False
    said = ""  # why start-up waits, once it does: /ready keeps saying it meanwhile
    phase = ""

    def enter(what: str) -> None:
        nonlocal phase
        phase = what
        if not said:
            service.loading_reason = what

    while True:
        try:
            if service.dedup is None:
                enter("opening dedup store")
                if service.ledger is not None:
                    dedup = service.ledger
                elif dedup is None:
                    from flk_fast.storage import open_dedup

                    dedup = await _maybe_await(
                        open_dedup(cfg.dedup_url, read_dsn=cfg.dedup_read_dsn)
                    )
                service.dedup = dedup
            if not checked:
                # A store that connects lazily opens fine while its server is down;
                # without this round trip the ready line was logged while /ready
                # answered 503. Reachable first, then durable (ConfigError: fatal).
                enter("connecting to the dedup store")
                await _ping(dedup)
                await _check_durability(dedup)
                checked = True
            if service.ledger is not None:
                enter("adopting the data of an older layout")
                from .migrate import adopt_old_layout

                judged = await adopt_old_layout(cfg, service, index, workers)
                if index == 0 and service.audit is not None:
                    # The spools of worker indexes this group no longer starts
                    # (--workers went down) would never be shipped otherwise.
                    led = service.ledger
                    if await led.run(led.store.adopt_spools, workers):
                        service.audit.spooled()
                break
            enter("replaying inbox WAL")
            judged = await service.replay(_chunks(service.wal))
            if index == 0:
                judged += await _replay_orphans(cfg, service, workers)
                if service.audit is not None:
                    await _ship_orphan_spools(cfg, service, workers)
            break
        except LmdbDamagedError:
            raise  # waiting cannot repair a file: fatal, with the fix in the message
        except (DedupUnavailableError, StorageError, OSError, TimeoutError) as exc:
            reason = waiting_reason(cfg, exc, phase)
            service.loading_reason = reason
            if reason != said:  # once per cause, not at every retry
                said = reason
                log.warning("start-up waits: %s", reason, extra={"event": "waiting"})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    service.ready = True
    service.loading_reason = ""
    service.replayed_at_start = judged
    if said:
        log.info("start-up goes on; it waited because %s", said)
    if judged:
        log.info("replay done", extra={"event": "replayed", "replayed": judged})


#: Seconds the start-up round trip to the dedup store may take.
PING_TIMEOUT_S = 2.0


async def _ping(dedup: Any) -> None:
    ping = getattr(dedup, "ping", None)
    if ping is None:
        return
    try:
        await asyncio.wait_for(_maybe_await(ping()), PING_TIMEOUT_S)
    except TimeoutError:
        raise TimeoutError(f"no answer within {PING_TIMEOUT_S} s") from None


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the device is full."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        name = type(cur).__name__
        text = str(cur).lower()
        if name in ("WalFullError", "DiskError", "MapFullError") or (
            "no space left" in text or "mdb_map_full" in text
        ):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def cause(exc: BaseException, url: str = "") -> str:
    """What went wrong, in words, with secrets masked (those of ``url`` too): the
    message, plus the OS's reason from the innermost cause when the message does not
    already say it (a driver's wrapper often carries only a class name)."""
    text = redact(exc, url).strip()
    seen: set[int] = set()
    cur: BaseException | None = exc
    root = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        root = cur
        cur = cur.__cause__ or cur.__context__
    why = ""
    if isinstance(root, OSError) and root.strerror:
        why = root.strerror
    elif root is not exc and str(root):
        why = redact(root, url)
    if not text:
        text = why or type(exc).__name__
    elif why and why.lower() not in text.lower():
        text = f"{text} ({why})"
    return text


def waiting_reason(cfg: ServerConfig, exc: BaseException, phase: str) -> str:
    """The ``/ready`` detail and log line while start-up waits on ``exc``, which
    broke ``phase`` (what start-up was doing)."""
    from flk_fast.errors import DedupUnavailableError

    if disk_full(exc):
        return (
            f"disk full while {phase}: {cause(exc, cfg.dedup_url)}; free space on "
            "that device (start-up retries)"
        )
    if isinstance(exc, DedupUnavailableError | TimeoutError) or "dedup" in phase:
        return (
            f"dedup store {redact(cfg.dedup_url, cfg.dedup_url)} is unreachable: "
            f"{cause(exc, cfg.dedup_url)} "
            "(start-up retries)"
        )
    return f"{phase} failed: {cause(exc, cfg.dedup_url)} (start-up retries)"


async def _check_durability(dedup: Any) -> None:
    """Refuse to start on a dedup server that may forget what it acknowledged (a
    Redis with ``appendonly no``): ``check_durability()`` raises ``ConfigError``,
    fatal here. A server that cannot be reached yet is not waited for: the store
    checks each connection as it opens and answers 503 while it is not durable."""
    from flk_fast.errors import StorageError

    check = getattr(dedup, "check_durability", None)
    if check is None:
        return
    try:
        await check()
    except StorageError as exc:
        log.warning("dedup durability not checked at start-up: %s", redact(exc))


def _chunks(wal: Any, older_than: float | None = None) -> Callable[[], Any]:
    """Pull unacked records in chunks from an ``AsyncWal`` (reads run on its writer
    thread, each chunk in its own short read transaction). With ``older_than`` (epoch
    seconds) stop at the first record appended after it: records are in append order."""
    pos = 0
    done = False

    async def next_chunk() -> list[tuple[int, bytes]]:
        nonlocal pos, done
        if done:
            return []
        recs = await wal.pending(_REPLAY_CHUNK, pos)
        if recs:
            pos = recs[-1].seq + 1
        if older_than is not None:
            kept = [r for r in recs if r.appended_at < older_than]
            done = len(kept) < len(recs)
            recs = kept
        return [(r.seq, r.data) for r in recs]

    return next_chunk


#: Maintenance cadence (seconds): catch-up replay of records left unjudged by a dedup
#: outage, expiry sweep of an LMDB dedup store. (WAL compaction rides on the ack
#: flusher of replay.py.)
TICK_S = 5.0
CATCH_UP_EVERY_S = 30.0
CATCH_UP_OLDER_THAN_S = 30.0
SWEEP_EVERY_S = 600.0


async def _maintenance(service: IngestService) -> None:
    """Re-judge what an outage left behind, and expire old dedup entries, while serving.

    A record still unacked CATCH_UP_OLDER_THAN_S after its append is not in flight any
    more (its request got a 503 while the dedup store was down), so it is judged now
    rather than at the next start; judging is idempotent.
    """
    last_catch_up = last_sweep = time.monotonic()
    while True:
        await asyncio.sleep(TICK_S)
        if not service.ready:
            continue
        try:
            now = time.monotonic()
            if now - last_catch_up >= CATCH_UP_EVERY_S and service.wal is not None:
                last_catch_up = now
                n = await service.replay(
                    _chunks(service.wal, time.time() - CATCH_UP_OLDER_THAN_S),
                    drain=False,
                )
                if n:
                    log.info("caught up", extra={"event": "caught_up", "replayed": n})
            if now - last_sweep >= SWEEP_EVERY_S and hasattr(service.dedup, "sweep"):
                last_sweep = now
                await service.dedup.sweep()
                if service.ledger is not None:
                    await service.ledger.run(service.ledger.store.drop_days)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is down: try again next round
            log.warning("maintenance round failed: %s", redact(exc))


async def _ship_orphan_spools(
    cfg: ServerConfig, service: IngestService, workers: int
) -> None:
    """Move the audit spools ``audit-spool/w<i>`` of worker indexes >= ``workers``
    (an earlier, wider run) into this worker's, which ships them: no worker would."""
    from .migrate import move_spool

    root = Path(cfg.data_dir) / "audit-spool"
    if not root.is_dir():
        return
    moved = 0
    for entry in sorted(os.listdir(root)):
        if entry.startswith("w") and entry[1:].isdigit() and int(entry[1:]) >= workers:
            moved += await move_spool(service.audit.spool, root / entry)
    if moved:
        log.info("%d audit entries of spools of workers gone moved", moved)
        service.audit.spooled()


async def _replay_orphans(
    cfg: ServerConfig, service: IngestService, workers: int
) -> int:
    """Replay the WALs of worker indexes >= ``workers`` left by an earlier, wider
    run."""
    from flk_fast.storage.aio import AsyncWal
    from flk_fast.storage.wal_lmdb import LmdbWal

    root = Path(cfg.data_dir) / "inbox"
    if not root.is_dir():
        return 0
    judged = 0
    for entry in sorted(os.listdir(root)):
        if (
            not (entry.startswith("w") and entry[1:].isdigit())
            or int(entry[1:]) < workers
        ):
            continue
        wal = LmdbWal(
            root / entry, sync=cfg.wal_sync, rotate_daily=True, retention_days=14
        )
        own = service.wal
        service.wal = AsyncWal(wal)  # acks of this replay go to the orphan WAL
        try:
            judged += await service.replay(_chunks(service.wal))
        finally:
            await _maybe_await(service.wal.close())
            service.wal = own
    return judged
