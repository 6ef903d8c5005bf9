"""Token bucket arithmetic with an injected clock."""

from __future__ import annotations

from flk_fast.server.ratelimit import RateLimiter, TokenBucket


def test_bucket_refills_at_rate() -> None:
    b = TokenBucket(rate=10, burst=2, now=0.0)
    assert b.take(0.0) == 0 and b.take(0.0) == 0
    assert 0.09 < b.take(0.0) <= 0.1
    assert b.take(0.1) == 0  # one token came back after 1/rate seconds


def test_limiter_global_and_tenant() -> None:
    t = [0.0]
    lim = RateLimiter(
        rate=1, burst=3, tenant_rate=1, tenant_burst=1, clock=lambda: t[0]
    )
    assert lim.check("a") == 0
    assert lim.check("a") == 1  # a's bucket is empty; Retry-After is whole seconds
    assert lim.check("b") == 0
    assert lim.check("c") == 0
    assert lim.check("d") == 1  # global burst of 3 spent
    t[0] = 1.0
    assert lim.check("d") == 0


def test_disabled() -> None:
    lim = RateLimiter()
    assert not lim.enabled and lim.check("x") == 0
