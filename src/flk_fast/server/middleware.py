"""One middleware: request id, latency histogram, optional access log, and the last line
of defence that turns an unexpected exception into a logged JSON 500 (bad *input* never
gets here: the handlers answer it with 4xx).

Also the JSON log formatter, so every log line of the server is one JSON object that
carries the request id of the request it was written for.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from flk_fast.metrics import ServerMetrics

__all__ = ["JsonFormatter", "REQUEST_ID", "make_middleware"]

#: The current request's id, picked up by :class:`JsonFormatter`.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "flk_request_id", default=""
)
_MAX_CLIENT_ID = 64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

access_log = logging.getLogger("flk_fast.server.access")
log = logging.getLogger("flk_fast.server")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, **extra}`` on one line."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
        "message",
        "asctime",
    }

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid:
            doc["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in self._SKIP and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def make_middleware(metrics: ServerMetrics, *, access: bool) -> Middleware:
    # Ids are "<pid hex>-<counter hex>": unique across workers and restarts of a pid is
    # good enough for correlating log lines, and far cheaper than uuid4 per request.
    prefix = f"{os.getpid():x}-"
    counter = itertools.count(1)
    observe = metrics.observe
    clock = time.perf_counter

    @web.middleware
    async def flk_middleware(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        start = clock()
        rid = request.headers.get("X-Request-Id")
        if not rid or len(rid) > _MAX_CLIENT_ID or not rid.isprintable():
            rid = prefix + format(next(counter), "x")
        token = REQUEST_ID.set(rid)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # router 404s: raised on, not returned
            exc.headers["X-Request-Id"] = rid
            _record(request, rid, exc.status, clock() - start)
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            resp = web.Response(
                status=500,
                body=b'{"error":"internal"}',
                headers={"Content-Type": "application/json"},
            )
        finally:
            REQUEST_ID.reset(token)
        resp.headers["X-Request-Id"] = rid
        _record(request, rid, resp.status, clock() - start)
        return resp

    def _record(request: web.Request, rid: str, status: int, elapsed: float) -> None:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        observe(route, status, elapsed)
        if access:
            access_log.info(
                "request",
                extra={
                    "request_id": rid,
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 3),
                },
            )

    return flk_middleware
