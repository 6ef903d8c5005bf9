"""Read a request body, inflating ``Content-Encoding`` ourselves, in bounded steps.

Why not aiohttp's own decoding: its parser inflates in ``data_received`` (on the event
loop), and once a handler has answered 413 its lingering drain reads, and so inflates,
the rest of the body to keep the connection. A 1 MB gzip of 1 GB of zeros then held
the loop for about 3 s, and ``/health`` waited 5 s behind three such senders.
``make_app`` therefore builds the app with ``handler_args={"auto_decompress": False}``
(:data:`HANDLER_ARGS`): every runner (``flk serve``, the test server, ``run_app``)
hands the handler the raw bytes, and a drain after a refusal only reads them.

Here each ``decompress`` call gets at most :data:`STEP` bytes of input and may produce
at most :data:`STEP` bytes of output, and the loop is given back between steps, so no
request holds it for more than one step (well under a millisecond). Decoding stops as
soon as the output passes ``max_body``: a bomb costs ``max_body`` bytes of inflating,
never its decoded size. A thread per body was the rejected alternative: the hop costs
more than inflating a PCS of a few KB, and the bound on work is what protects the loop,
not where the work runs.

Every failure is a :class:`BodyError` that carries its HTTP answer (status, ``error``
code, fields, whether the connection must be closed), so the handler maps all of them
with one ``except``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from flk_fast.errors import FlkError

__all__ = [
    "DECODABLE",
    "HANDLER_ARGS",
    "STEP",
    "BodyEncodingError",
    "BodyError",
    "BodyIncompleteError",
    "BodyTimeoutError",
    "BodyTooLargeError",
    "UnsupportedEncodingError",
    "read_body",
]

#: ``Content-Encoding`` values :func:`read_body` decodes (compared stripped and lower
#: case; a missing header is identity). ``br`` and ``zstd`` are not among them: their
#: decoders' bounded-output APIs differ by library version, and neither ships here.
DECODABLE: tuple[str, ...] = ("deflate", "gzip", "identity")
#: The low-level server options the app needs (``web.Application(handler_args=...)``).
HANDLER_ARGS: dict[str, Any] = {"auto_decompress": False}
#: Most input bytes fed to, and most output bytes taken from, one ``decompress`` call.
STEP = 64 * 1024
#: Most gzip members (RFC 1952 §2.2 allows several) in one body; real clients send one.
MAX_GZIP_MEMBERS = 64


class BodyError(FlkError):
    """A request body that cannot be read; its attributes are the HTTP answer.

    ``status`` and ``error`` are the status and JSON ``error`` code, ``fields`` the
    other members of the JSON error body, ``close`` whether the connection must be
    closed after the answer (the rest of the body is never read).
    """

    status: ClassVar[int] = 400
    error: ClassVar[str] = "invalid_body"
    close: ClassVar[bool] = True

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields: dict[str, Any] = fields


class BodyTooLargeError(BodyError):
    """More than ``max_body`` bytes, before or after decoding (HTTP 413)."""

    status = 413
    error = "body_too_large"

    def __init__(self, limit: int, encoding: str) -> None:
        after = "" if encoding == "identity" else f" after decoding {encoding}"
        super().__init__(
            f"the body is larger than {limit} bytes{after}",
            limit=limit,
            detail=f"larger than {limit} bytes{after} (--max-body)",
        )


class BodyEncodingError(BodyError, ValueError):
    """The body does not decode as its ``Content-Encoding`` says, or its chunked
    framing is broken (HTTP 400 ``invalid_body``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, detail=detail)


class BodyIncompleteError(BodyError, ConnectionError):
    """The client closed the connection before the body was complete (HTTP 400; the
    answer usually has nobody to go to)."""

    error = "incomplete_body"

    def __init__(self) -> None:
        super().__init__("the connection closed before the body was complete")


class BodyTimeoutError(BodyError, TimeoutError):
    """The body did not arrive within ``timeout_s`` (HTTP 408)."""

    status = 408
    error = "body_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"the body did not arrive within {timeout_s} s", limit_s=timeout_s
        )


class UnsupportedEncodingError(BodyError):
    """A ``Content-Encoding`` that :data:`DECODABLE` does not list (HTTP 415)."""

    status = 415
    error = "unsupported_content_encoding"
    close = False  # refused before any body byte was read: the drain is cheap

    def __init__(self, encoding: str) -> None:
        super().__init__(
            f"Content-Encoding {encoding!r} is not supported",
            encoding=encoding[:64],
            supported=sorted(DECODABLE),
        )


class _Identity:
    name = "identity"

    def steps(self, data: bytes) -> Iterator[bytes]:
        yield data

    def finish(self) -> None:
        return None


class _Zlib:
    """gzip (members chained, RFC 1952) or deflate (zlib-wrapped RFC 1950, or raw
    RFC 1951 as some clients send it; told apart by the first byte, as aiohttp does)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._d: Any = None  # zlib.Decompress of the current member
        self._members = 0
        self._fed = False

    def _decompressor(self, first: int) -> Any:
        if self._d is not None:
            if not self._d.eof:
                return self._d
            if self.name != "gzip":
                raise BodyEncodingError("data after the end of the deflate stream")
            if self._members >= MAX_GZIP_MEMBERS:
                raise BodyEncodingError(
                    f"more than {MAX_GZIP_MEMBERS} gzip members in one body"
                )
        if self.name == "gzip":
            wbits = 16 + zlib.MAX_WBITS
        else:  # RFC 1950 header: the low nibble of the first byte is CM = 8
            wbits = zlib.MAX_WBITS if first & 0x0F == 8 else -zlib.MAX_WBITS
        self._members += 1
        self._d = zlib.decompressobj(wbits)
        return self._d

    def steps(self, data: bytes) -> Iterator[bytes]:
        """Inflate ``data``; each item is the output of one bounded call (maybe
        empty)."""
        view = memoryview(data)
        pos = 0
        carry = b""  # what followed the end of a gzip member: the next one's start
        while carry or pos < len(view):
            if carry:
                piece: bytes | memoryview = carry
                carry = b""
            else:
                piece = view[pos : pos + STEP]
                pos += len(piece)
            self._fed = True
            d = self._decompressor(piece[0])
            try:
                yield d.decompress(piece, STEP)
                # (At the end of a member the leftover input is unused_data; this
                # Python leaves a stale copy in unconsumed_tail, so test eof too.)
                while d.unconsumed_tail and not d.eof:
                    yield d.decompress(d.unconsumed_tail, STEP)
            except zlib.error as exc:
                raise BodyEncodingError(f"not valid {self.name}: {exc}") from None
            if d.eof:
                carry = d.unused_data

    def finish(self) -> None:
        # Never flush(): it would inflate whatever is left in one unbounded call. The
        # steps drained every output already, so a stream that did not reach its end
        # is truncated.
        if self._fed and not self._d.eof:
            raise BodyEncodingError(f"truncated {self.name} data")


def _decoder(header: str | None) -> _Identity | _Zlib:
    name = (header or "identity").strip().lower() or "identity"
    if name not in DECODABLE:
        raise UnsupportedEncodingError(header or "")
    return _Identity() if name == "identity" else _Zlib(name)


async def read_body(request: web.BaseRequest, max_body: int, timeout_s: float) -> bytes:
    """The decoded body of ``request``, at most ``max_body`` bytes.

    Parameters
    ----------
    request : aiohttp.web.BaseRequest
        A request of an app built with :data:`HANDLER_ARGS` (``make_app`` does), so
        that its payload holds the bytes as sent. (If aiohttp inflates anyway, the
        bytes it hands over are taken as identity and bounded the same way.)
    max_body : int
        Limit in bytes, for the bytes as sent and again for the decoded ones.
    timeout_s : float
        Seconds the whole body may take to arrive; no timer is armed when it is
        already buffered (the usual case for a PCS).

    Returns
    -------
    bytes
        The decoded body (``b""`` for an empty one).

    Raises
    ------
    UnsupportedEncodingError
        415: a ``Content-Encoding`` outside :data:`DECODABLE`.
    BodyTooLargeError
        413: more than ``max_body`` bytes as sent or after decoding.
    BodyEncodingError
        400 ``invalid_body``: not valid gzip/deflate, truncated, or bad chunking.
    BodyIncompleteError
        400 ``incomplete_body``: the client went away mid-body.
    BodyTimeoutError
        408: the body took longer than ``timeout_s``.

    All derive from :class:`BodyError`, whose ``status``, ``error``, ``fields`` and
    ``close`` are the answer.
    """
    decoder = _decoder(request.headers.get("Content-Encoding"))
    stream = request.content
    # (EmptyStreamReader, the payload of a request without a body, has no such slot.)
    if getattr(stream, "total_compressed_bytes", None) is not None:
        decoder = _Identity()  # aiohttp's parser inflates this one itself
    try:
        if stream.is_eof():
            return await _read(stream, decoder, max_body)
        async with asyncio.timeout(timeout_s):
            return await _read(stream, decoder, max_body)
    except TimeoutError:
        raise BodyTimeoutError(timeout_s) from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLargeError(max_body, decoder.name) from None
    except ConnectionError:
        raise BodyIncompleteError() from None
    except RequestPayloadError as exc:  # broken chunked framing
        raise BodyEncodingError(str(exc).strip() or "broken body") from None


async def _read(stream: Any, decoder: _Identity | _Zlib, max_body: int) -> bytes:
    body = bytearray()
    raw = 0
    while True:
        chunk = await stream.readany()
        if not chunk:
            break
        raw += len(chunk)
        if raw > max_body:
            raise BodyTooLargeError(max_body, decoder.name)
        first = True
        for out in decoder.steps(chunk):
            if not first:
                await asyncio.sleep(0)  # one bounded step per loop turn
            first = False
            if len(body) + len(out) > max_body:
                raise BodyTooLargeError(max_body, decoder.name)
            body += out
    decoder.finish()
    return bytes(body)
