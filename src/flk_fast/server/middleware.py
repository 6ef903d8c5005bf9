"""The per-route wrapper of every handler: request id, latency histogram, optional
access log, JSON 404 (a catch-all route) and 405, and the last line of defence that
turns an unexpected exception into a logged JSON 500 (bad *input* never gets here: the
handlers answer it with 4xx).

The JSON log formatter lives in :mod:`flk_fast.logs` (the agent uses it too); every
log line of the server is one JSON object that carries the request id of the request
it was written for.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from flk_fast.logs import REQUEST_ID, JsonFormatter
from flk_fast.metrics import ServerMetrics

from .answers import json_error

__all__ = ["JsonFormatter", "REQUEST_ID", "make_observer", "not_found"]

_MAX_CLIENT_ID = 64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

access_log = logging.getLogger("flk_fast.server.access")
log = logging.getLogger("flk_fast.server")


def make_observer(metrics: ServerMetrics, *, access: bool) -> Callable[..., Handler]:
    """``observed(route, handler, methods=None)``: ``handler`` with a request id, its
    latency in the histogram (children bound once per route and status), the optional
    access log, a JSON 405 for a method not in ``methods`` (None: the handler checks
    itself) and a logged JSON 500 for an unexpected exception.

    Wrapped per route instead of one aiohttp middleware: with no middleware at all,
    aiohttp skips its middleware chain (and its per-app wrapper) on every request.
    """
    # Ids are "<pid hex>-<counter hex>": unique across workers and restarts of a pid is
    # good enough for correlating log lines, and far cheaper than uuid4 per request.
    prefix = f"{os.getpid():x}-"
    counter = itertools.count(1)
    clock = time.perf_counter

    def observed(
        route: str, handler: Handler, methods: tuple[str, ...] | None = None
    ) -> Handler:
        children: dict[int, Any] = {}

        def record(request: web.Request, rid: str, status: int, elapsed: float) -> None:
            child = children.get(status)
            if child is None:
                child = children[status] = metrics.latency.labels(route, str(status))
            child.observe(elapsed)
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

        async def wrapped(request: web.Request) -> web.StreamResponse:
            start = clock()
            rid = request.headers.get("X-Request-Id")
            if not rid or len(rid) > _MAX_CLIENT_ID or not rid.isprintable():
                rid = prefix + format(next(counter), "x")
            token = REQUEST_ID.set(rid)
            resp: web.StreamResponse
            try:
                if methods is not None and request.method not in methods:
                    resp = json_error(
                        405,
                        "method_not_allowed",
                        {"Allow": ", ".join(methods)},
                        detail=f"use {', '.join(methods)}",
                    )
                else:
                    resp = await handler(request)
            except web.HTTPException as exc:  # one a handler raised
                resp = _http_error(exc)
            except Exception as exc:
                # One line (JsonFormatter): a bug that every request hits must not
                # write a traceback per request. --log-level debug adds it.
                log.error(
                    "unhandled error on %s %s",
                    request.method,
                    request.path,
                    exc_info=exc,
                    extra={"event": "internal_error"},
                )
                resp = json_error(500, "internal")
            finally:
                REQUEST_ID.reset(token)
            resp.headers["X-Request-Id"] = rid
            record(request, rid, resp.status, clock() - start)
            return resp

        return wrapped

    return observed


async def not_found(request: web.Request) -> web.Response:
    """The catch-all route: JSON 404 for every path no other route has."""
    return json_error(404, "not_found", detail="no such path; see /openapi.json")


def _http_error(exc: web.HTTPException) -> web.StreamResponse:
    """The JSON answer to an ``HTTPException`` (the router's 404 and 405, or one a
    handler raised), with its headers (``Allow``) kept."""
    headers = {
        k: v
        for k, v in exc.headers.items()
        if k.lower() not in ("content-type", "content-length")
    }
    if exc.status == 404:
        return json_error(
            404, "not_found", headers, detail="no such path; see /openapi.json"
        )
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        return json_error(
            405,
            "method_not_allowed",
            headers,
            detail=f"use {', '.join(allowed)}" if allowed else "method not allowed",
        )
    code = "_".join((exc.reason or str(exc.status)).lower().split())
    return json_error(exc.status, code, headers)
