"""HTTP delivery of PCS bodies with SPEC §7's retry policy (aiohttp).

One :class:`DeliveryClient` owns one ``aiohttp.ClientSession`` for its whole life, so
connections are kept alive and reused; a semaphore bounds how many requests are in
flight (waiting between retries does not hold a slot, so a slow record never blocks the
others). The client knows nothing about the outbox: it takes bytes and returns a
:class:`DeliveryResult` that says "acked" or "dead" and why; the caller acks or
dead-letters. Retrying is safe because the server deduplicates on ``pcs_id``.

Clock, sleep and random source are injected so tests can check every wait exactly
without waiting.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yarl

from flk_fast.agent.retry import (
    RetryPolicy,
    Rng,
    backoff,
    classify_status,
    is_transient,
    jittered,
    parse_retry_after,
)
from flk_fast.errors import ConfigError

__all__ = [
    "ACKED",
    "DEAD",
    "DeliveryClient",
    "DeliveryResult",
    "SUBMIT_PATH",
    "tls_context",
]

ACKED = "acked"
DEAD = "dead"
SUBMIT_PATH = "/v1/pcs/submit"

#: Longest response body kept in a result: enough for the server's verdict or error
#: JSON, bounded so that a misbehaving server cannot bloat the dead-letter queue.
_MAX_KEPT_BODY = 4096
#: Longest response body read at all. The server's answers are a few hundred bytes;
#: a broken or hostile endpoint streaming megabytes (or never ending its body) must
#: neither fill memory nor hold the request until it times out.
_MAX_READ_BODY = 64 * 1024

Sleep = Callable[[float], Awaitable[Any]]
BodyFactory = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one submission ended.

    ``outcome`` is ``"acked"`` (200/202) or ``"dead"`` (no retry can help, or the retry
    budget ran out). ``status`` is the last HTTP status, None when the last try got no
    response (timeout, reset). ``attempts`` counts sends; ``waits`` the seconds slept
    between them, in order. ``accepted``/``escalated`` come from the server's verdict
    JSON when it sent one, ``verdict_reason`` its ``reason`` (why it escalated).
    """

    outcome: str
    status: int | None
    attempts: int
    reason: str
    body: bytes = b""
    waits: tuple[float, ...] = ()
    accepted: bool | None = None
    escalated: bool | None = None
    verdict_reason: str | None = None

    @property
    def acked(self) -> bool:
        return self.outcome == ACKED

    @property
    def transient(self) -> bool:
        """Dead for a failure that may heal by itself (re-driven automatically)."""
        return self.outcome == DEAD and is_transient(self.status)


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


def _verdict(body: bytes) -> tuple[bool | None, bool | None, str | None]:
    # The verdict is informational for the summary line; a body that is not the
    # expected JSON must never turn an ack into a failure.
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    acc = doc.get("accepted")
    esc = doc.get("escalated")
    why = doc.get("reason")
    return (
        acc if isinstance(acc, bool) else None,
        esc if isinstance(esc, bool) else None,
        why if isinstance(why, str) else None,
    )


def submit_url(endpoint: str, option: str = "--endpoint") -> str:
    """The submit URL: a bare base URL gets ``/v1/pcs/submit`` added. ``option`` is
    what the error messages call the value (the flag it came from).

    Examples
    --------
    >>> submit_url("http://127.0.0.1:8080")
    'http://127.0.0.1:8080/v1/pcs/submit'
    >>> submit_url("https://ingest.example/custom/path")
    'https://ingest.example/custom/path'
    """
    try:
        url = yarl.URL(endpoint)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{option} {endpoint!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"{option} {endpoint!r} must be an http:// or https:// URL")
    if url.path in ("", "/"):
        url = url.with_path(SUBMIT_PATH)
    return str(url)


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key,
    # hanging a daemon; refuse instead.
    raise ConfigError("--tls-key is encrypted; give an unencrypted key file")


def tls_context(
    ca_file: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext | None:
    """The TLS context for https endpoints, or None when nothing is given.

    ``ca_file`` (PEM bundle) becomes the *only* trust store: the system CAs are not
    loaded beside it. Without it the system store is used. ``cert`` and ``key`` (PEM)
    are the client certificate for mTLS and go together. Verification (chain and host
    name) is always on; there is deliberately no way to turn it off.

    Raises
    ------
    ConfigError
        ``cert`` without ``key`` or the reverse, an unreadable file, a bundle without
        a certificate, a key that does not match the certificate or is encrypted.

    Examples
    --------
    >>> tls_context() is None
    True
    """
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if ca_file is None and cert is None:
        return None
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=os.fspath(ca_file) if ca_file is not None else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-ca-file {ca_file}: {exc}") from None
    if ca_file is not None and not ctx.get_ca_certs():
        raise ConfigError(f"--tls-ca-file {ca_file}: no CA certificate in it")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # as the server (docs/server.md)
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(os.fspath(cert), os.fspath(key), password=_no_password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: {exc}") from None
    return ctx


class DeliveryClient:
    """Deliver PCS bodies with retries; use as ``async with DeliveryClient(...) as c``.

    Parameters
    ----------
    endpoint : str
        Server base URL (``http://host:port``) or the full submit URL.
    policy : RetryPolicy
        Backoff and budgets (SPEC §7 defaults).
    concurrency : int
        Requests in flight at once (also the connection-pool size).
    timeout_s : float
        Total time allowed for one request (connect + send + response); a request that
        takes longer is a timeout and is retried.
    sleep, rng, now :
        Injected for tests: the wait function, the jitter source and the wall clock used
        to turn an HTTP-date ``Retry-After`` into seconds.
    headers : dict, optional
        Extra request headers (e.g. a key id).
    ssl_context : ssl.SSLContext, optional
        For https endpoints signed by a private CA and/or mTLS (see
        :func:`tls_context`); built once by the caller, shared by every connection.
        It must verify certificates and host names. None: the system trust store.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 8,
        timeout_s: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        rng: Rng | None = None,
        now: Callable[[], float] = time.time,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if not timeout_s > 0:
            raise ConfigError(f"timeout must be > 0 s, got {timeout_s}")
        self.url = submit_url(endpoint)
        if ssl_context is not None:
            if yarl.URL(self.url).scheme != "https":
                # Asking for TLS and then sending in clear text is never intended.
                raise ConfigError(
                    f"TLS options need an https:// endpoint, got {endpoint!r}"
                )
            if ssl_context.verify_mode != ssl.CERT_REQUIRED or (
                not ssl_context.check_hostname
            ):
                raise ConfigError(
                    "ssl_context must verify the server's certificate and host name"
                )
        self.ssl_context = ssl_context
        self.policy = policy if policy is not None else RetryPolicy()
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._rng: Rng = rng if rng is not None else random.Random()
        self._now = now
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self.counters = _Counters()

    async def __aenter__(self) -> DeliveryClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            enable_cleanup_closed=False,
            # True = aiohttp's default verification against the system store.
            ssl=self.ssl_context if self.ssl_context is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            # The body is already JSON bytes; nothing to decompress worth the CPU.
            auto_decompress=False,
        )
        self._slots = asyncio.Semaphore(self.concurrency)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send_once(self, body: bytes) -> tuple[int, bytes, str | None]:
        assert self._session is not None and self._slots is not None, (
            "call start() first"
        )
        async with self._slots:
            self.counters.requests += 1
            async with self._session.post(
                self.url, data=body, headers=self._headers
            ) as resp:
                data = bytearray()
                while len(data) < _MAX_READ_BODY:
                    part = await resp.content.read(_MAX_READ_BODY - len(data))
                    if not part:
                        break
                    data += part
                if not resp.content.at_eof():
                    resp.close()  # drop the connection rather than read the rest
                return resp.status, bytes(data), resp.headers.get("Retry-After")

    async def probe(self) -> bool:
        """Whether the server answers again: ``GET /ready`` at the endpoint's origin
        gives a status that is not transient (SPEC §7: 503 while a dependency is down
        or the server loads). Any other answer (even 404 from a proxy that has no
        /ready) means something is there to take the re-driven dead letters."""
        assert self._session is not None, "call start() first"
        url = yarl.URL(self.url).with_path("/ready")
        try:
            async with self._session.get(url, headers=self._headers) as resp:
                resp.close()
                return not is_transient(resp.status)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def submit(self, body: bytes | BodyFactory) -> DeliveryResult:
        """Send one PCS until it is acknowledged or dead; never raises for HTTP trouble.

        ``body`` may be a function of the 1-based attempt number, so the caller can
        stamp ``attempt``/``sent_at`` (fields outside the signature) on each resend.
        """
        if callable(body):
            make: BodyFactory = body
        else:
            fixed = body

            def make(_attempt: int) -> bytes:
                return fixed

        waits: list[float] = []
        retries = 0
        rate_limited = 0
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            data = b""
            retry_after: str | None = None
            try:
                status, data, retry_after = await self._send_once(make(attempt))
            except TimeoutError:
                self.counters.timeouts += 1
                why = f"timeout after {self.timeout_s:g} s"
            except (aiohttp.ClientError, OSError) as exc:
                # Resets, refused connections, a keep-alive socket the server closed
                # under us: the request may or may not have landed; dedup makes a
                # resend harmless.
                self.counters.connection_errors += 1
                why = f"connection error: {type(exc).__name__}: {exc}".rstrip(": ")
            else:
                self.counters.by_status[status] = (
                    self.counters.by_status.get(status, 0) + 1
                )
                action = classify_status(status)
                if action == "ack":
                    acc, esc, because = _verdict(data)
                    return DeliveryResult(
                        ACKED,
                        status,
                        attempt,
                        "",
                        data[:_MAX_KEPT_BODY],
                        tuple(waits),
                        acc,
                        esc,
                        because,
                    )
                text = data[:200].decode("utf-8", "replace").strip()
                why = f"HTTP {status}" + (f": {text}" if text else "")
                if action == "dead":
                    return DeliveryResult(
                        DEAD, status, attempt, why, data[:_MAX_KEPT_BODY], tuple(waits)
                    )
                if action == "rate_limited":
                    if rate_limited >= self.policy.max_rate_limited:
                        return DeliveryResult(
                            DEAD,
                            status,
                            attempt,
                            f"rate limited {rate_limited + 1} times; " + why,
                            data[:_MAX_KEPT_BODY],
                            tuple(waits),
                        )
                    hinted = parse_retry_after(retry_after, now=self._now())
                    wait = (
                        min(self.policy.retry_after_cap_s, hinted)
                        if hinted is not None
                        else jittered(self.policy, min(rate_limited, 16), self._rng)
                    )
                    rate_limited += 1
                    waits.append(wait)
                    await self._sleep(wait)
                    continue
            # Retryable: 5xx, timeout or connection error.
            if retries >= self.policy.max_retries:
                return DeliveryResult(
                    DEAD,
                    status,
                    attempt,
                    f"retries exhausted after {attempt} attempts; last: {why}",
                    data[:_MAX_KEPT_BODY],
                    tuple(waits),
                )
            wait = jittered(self.policy, retries, self._rng)
            hinted = parse_retry_after(retry_after, now=self._now()) if status else None
            if hinted is not None:
                # A 503 that says when to come back (server loading, dedup down) knows
                # better than our guess, but never makes us wait less than the backoff.
                wait = max(wait, min(self.policy.retry_after_cap_s, hinted))
            retries += 1
            self.counters.retries += 1
            waits.append(wait)
            await self._sleep(wait)


def nominal_waits(policy: RetryPolicy) -> list[float]:
    """The un-jittered waits of a record that exhausts its budget."""
    return [backoff(policy, a) for a in range(policy.max_retries)]
