"""Token buckets: one global, one per tenant (HTTP 429 + Retry-After).

Pure and clock-injected so tests need no sleeping. Buckets are per process: with
``--workers N`` each worker enforces ``rate / N`` (the runner divides), which keeps the
sum right without a shared counter on the hot path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked; one request costs one."""

    __slots__ = ("burst", "rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one is due."""
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate

    def refund(self) -> None:
        """Give back a token taken for a request another bucket refused."""
        self._tokens = min(self.burst, self._tokens + 1.0)


class RateLimiter:
    """Global bucket plus one bucket per tenant; either may be off (rate 0)."""

    def __init__(
        self,
        rate: float = 0.0,
        burst: int = 0,
        tenant_rate: float = 0.0,
        tenant_burst: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._global = (
            TokenBucket(rate, burst or max(1.0, rate), clock()) if rate > 0 else None
        )
        self._tenant_rate = tenant_rate
        self._tenant_burst = tenant_burst or max(1.0, tenant_rate)
        self._tenants: dict[str, TokenBucket] = {}
        self.enabled = self._global is not None or tenant_rate > 0

    def check(self, tenant: str) -> int:
        """0 when the request may proceed, else whole seconds for ``Retry-After``.

        ``tenant`` must already be known to the key store, so the per-tenant table is
        bounded by the configured tenants, not by what clients send.
        """
        now = self._clock()
        wait = 0.0
        bucket = None
        if self._tenant_rate > 0:
            bucket = self._tenants.get(tenant)
            if bucket is None:
                bucket = TokenBucket(self._tenant_rate, self._tenant_burst, now)
                self._tenants[tenant] = bucket
            wait = bucket.take(now)
            if wait:
                return max(1, math.ceil(wait))
        if self._global is not None:
            wait = self._global.take(now)
            if wait:
                if bucket is not None:
                    bucket.refund()
                return max(1, math.ceil(wait))
        return 0
