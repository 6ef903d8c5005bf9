"""The JSON answers every part of the server shares."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from .bodies import BodyError

__all__ = ["JSON", "JSON_HEADERS", "body_error", "json_error"]

JSON = "application/json"
JSON_HEADERS = {"Content-Type": JSON}
ENC = msgspec.json.Encoder()


def json_error(
    status: int, error: str, headers: dict[str, str] | None = None, **fields: Any
) -> web.Response:
    """A JSON error response ``{"error": ..., **fields}``."""
    body = ENC.encode({"error": error, **fields})
    h = dict(JSON_HEADERS)
    if headers:
        h.update(headers)
    return web.Response(status=status, body=body, headers=h)


def body_error(exc: BodyError) -> web.Response:
    """The answer to a body that could not be read (the error carries it)."""
    resp = json_error(exc.status, exc.error, **exc.fields)
    if exc.close:
        resp.force_close()  # the rest of the body is never read
    return resp
