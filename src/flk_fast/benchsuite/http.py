"""A small keep-alive HTTP/1.1 client for the load generator: a pool of at most
``connections`` connections, one request in flight on each, FIFO for the rest.

Why not aiohttp's client (the agent's): measured against the echo endpoint in the
same run, it spends 140-180 us of client CPU per request (request and response
objects, headers, cookie jar) against 13-21 us here, which would cap one core at
~6 000 req/s; the generator must keep a 15 000 req/s schedule on one core. Here a
request is one ``transport.write`` of prebuilt bytes and the response goes through
``httptools`` (llhttp, the parser of uvloop and uvicorn), reading only the status
line: the body is parsed for framing and dropped.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import httptools
import yarl

from flk_fast.agent.client import submit_url
from flk_fast.errors import ConfigError, FlkError

__all__ = ["HttpPool", "RequestFailed", "target_url"]


def target_url(url: str) -> str:
    """The URL requests go to: a bare base URL gets ``/v1/pcs/submit`` (as the
    agent's ``--endpoint``).

    Examples
    --------
    >>> target_url("http://127.0.0.1:8080")
    'http://127.0.0.1:8080/v1/pcs/submit'
    """
    return submit_url(url, option="URL")


class RequestFailed(FlkError, ConnectionError):
    """A request that got no HTTP status; ``kind`` names why (for the report)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.reusable = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RequestFailed("bad-response", str(exc)))

    def eof_received(self) -> bool | None:
        self._fail(RequestFailed("connection-closed", "server closed the connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RequestFailed("connection-lost", str(exc or "closed")))

    # httptools callback
    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.parser.get_status_code())

    def _fail(self, exc: RequestFailed) -> None:
        self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    async def request(self, data: bytes) -> int:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class HttpPool:
    """POST bodies to one URL over kept-alive connections.

    ``post(body)`` returns the HTTP status or raises :class:`RequestFailed`; a caller
    that cancels it (a timeout) loses that connection, never the pool's slot.
    """

    def __init__(
        self,
        url: str,
        *,
        connections: int,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        u = yarl.URL(target_url(url))
        if connections < 1:
            raise ConfigError(f"--connections must be >= 1, got {connections}")
        self._host = u.raw_host or ""
        self._port = u.port or (443 if u.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if u.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._limit = connections
        lines = [
            f"POST {u.raw_path_qs or '/'} HTTP/1.1",
            f"Host: {u.raw_authority}",
            "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()
        self._idle: list[_Connection] = []
        self._opened = 0
        self._waiting: deque[asyncio.Future[_Connection | None]] = deque()

    async def connect(self, n: int) -> None:
        """Open up to ``n`` connections now, so connects stay out of the numbers."""
        n = min(n, self._limit - self._opened)
        self._opened += n
        results = await asyncio.gather(
            *(self._open() for _ in range(n)), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):
                self._opened -= 1
                if isinstance(r, Exception):
                    raise r
            else:
                self._idle.append(r)

    async def post(self, body: bytes) -> int:
        conn = await self._acquire()
        try:
            status = await conn.request(self._head + b"%d\r\n\r\n" % len(body) + body)
        except BaseException:
            conn.close()
            self._release(None)
            raise
        self._release(conn if conn.reusable else None)
        return status

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection,
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        except ssl.SSLError as exc:
            raise RequestFailed("tls", str(exc)) from None
        except OSError as exc:
            raise RequestFailed("connect", exc.strerror or str(exc)) from None
        return conn

    async def _acquire(self) -> _Connection:
        while self._idle:
            idle = self._idle.pop()
            if idle.reusable:
                return idle
            # The server closed it while idle (its keep-alive timeout): not an error.
            self._opened -= 1
        if self._opened >= self._limit:
            fut: asyncio.Future[_Connection | None]
            fut = asyncio.get_running_loop().create_future()
            self._waiting.append(fut)
            try:
                conn = await fut
            except asyncio.CancelledError:
                # Handed a connection or a slot just before the cancel: pass it on.
                if fut.done() and not fut.cancelled():
                    self._release(fut.result())
                raise
            if conn is not None:
                return conn
        else:
            self._opened += 1
        try:
            return await self._open()  # the slot is ours
        except BaseException:
            self._release(None)
            raise

    def _release(self, conn: _Connection | None) -> None:
        """Give a live connection (or, with None, a free slot) to the next waiter."""
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        if conn is None:
            self._opened -= 1
        else:
            self._idle.append(conn)
