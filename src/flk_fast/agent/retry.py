"""The agent's retry policy (SPEC §7), as pure functions.

Nothing here sleeps, reads a clock or touches the network: :func:`delays` yields the
seconds to wait and the caller (``agent.client``) decides how to wait, with a sleep
function it was given. That keeps every delay testable without real time passing.

Attempt numbering: attempt 0 is the first *retry* (the wait after the first failed
send), so with the defaults the nominal waits are 1, 2, 4, 8, 16 s and a record is sent
at most ``1 + max_retries`` = 6 times before it goes to the dead-letter queue.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from flk_fast.errors import ConfigError

__all__ = [
    "RetryPolicy",
    "Rng",
    "backoff",
    "classify_status",
    "delay_bounds",
    "delays",
    "is_transient",
    "jittered",
    "parse_retry_after",
]


#: Longest Retry-After value looked at; an HTTP date is 29 characters.
_MAX_RETRY_AFTER_CHARS = 64


class Rng(Protocol):
    """Anything with ``random() -> float`` in [0, 1), e.g. ``random.Random``."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff parameters; the defaults are SPEC §7's.

    Parameters
    ----------
    base_s : float
        Nominal wait before the first retry.
    cap_s : float
        No backoff wait (nominal or jittered) exceeds it.
    jitter : float
        Relative jitter: a nominal wait ``d`` becomes uniform in ``[d(1-j), d(1+j)]``.
    max_retries : int
        Retries after the first send for 5xx, timeouts and connection errors.
    max_rate_limited : int
        Separate budget for 429 answers. A rate limit says "later", not "broken", so a
        long backlog drain against a throttling server must not dead-letter records
        after five polite refusals; the budget still bounds the loop.
    retry_after_cap_s : float
        Longest ``Retry-After`` honoured (429, and 503 where it lengthens the backoff).
        SPEC §7 says to wait what the server asks, so this is separate from ``cap_s``
        (retrying after 60 s when asked for 120 s only earns another 429); it only
        guards against an absurd value parking a record for days.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.5
    max_retries: int = 5
    max_rate_limited: int = 100
    retry_after_cap_s: float = 3600.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.retry_after_cap_s) and self.retry_after_cap_s >= 0):
            raise ConfigError(
                "retry_after_cap_s must be a finite number >= 0, got "
                f"{self.retry_after_cap_s!r}"
            )
        if not (math.isfinite(self.base_s) and self.base_s >= 0):
            raise ConfigError(
                f"retry base_s must be a finite number >= 0, got {self.base_s!r}"
            )
        if not (math.isfinite(self.cap_s) and self.cap_s >= 0):
            raise ConfigError(
                f"retry cap_s must be a finite number >= 0, got {self.cap_s!r}"
            )
        if not (0.0 <= self.jitter <= 1.0):
            raise ConfigError(f"retry jitter must be in [0, 1], got {self.jitter!r}")
        if self.max_retries < 0 or self.max_rate_limited < 0:
            raise ConfigError("retry budgets must be >= 0")


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Nominal (un-jittered) wait before retry number ``attempt`` (0-based), capped."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    # 2.0**attempt overflows past attempt 1023; any attempt beyond 64 is already far
    # past every sane cap, so clamping the exponent changes nothing but the overflow.
    return min(policy.cap_s, policy.base_s * 2.0 ** min(attempt, 64))


def delay_bounds(policy: RetryPolicy, attempt: int) -> tuple[float, float]:
    """The closed interval every jittered wait for ``attempt`` falls in."""
    nominal = backoff(policy, attempt)
    return nominal * (1.0 - policy.jitter), min(
        policy.cap_s, nominal * (1.0 + policy.jitter)
    )


def jittered(policy: RetryPolicy, attempt: int, rng: Rng) -> float:
    """One jittered wait for ``attempt``: nominal × U(1-j, 1+j), never above the cap."""
    nominal = backoff(policy, attempt)
    factor = 1.0 + policy.jitter * (2.0 * rng.random() - 1.0)
    return min(policy.cap_s, nominal * factor)


def delays(policy: RetryPolicy, rng: Rng | None = None) -> Iterator[float]:
    """Yield the ``max_retries`` jittered waits, in order.

    Examples
    --------
    >>> p = RetryPolicy(jitter=0.0)
    >>> list(delays(p))
    [1.0, 2.0, 4.0, 8.0, 16.0]
    """
    r = rng if rng is not None else random.Random()
    for attempt in range(policy.max_retries):
        yield jittered(policy, attempt, r)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when absent or unusable.

    RFC 9110 allows delta-seconds or an HTTP date; ``now`` (Unix seconds) is needed for
    the date form. Negative or past values mean "now" (0.0). Garbage gives None so the
    caller falls back to its own backoff rather than trusting a broken server.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > _MAX_RETRY_AFTER_CHARS or not text.isascii():
        # Far longer than any delay or HTTP date, or not ASCII (str.isdigit() is true
        # for "²", which int() rejects; int() of over 4300 digits raises): garbage.
        return None
    if text.isdigit():
        return float(int(text))
    try:
        seconds = float(text)  # lenient: some servers send "1.5"
    except (ValueError, OverflowError):
        seconds = math.nan
    if math.isfinite(seconds):
        return max(0.0, seconds)
    if now is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
        stamp = when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, stamp - now)


def classify_status(status: int) -> str:
    """What the agent does with an HTTP status (SPEC §7).

    Returns ``"ack"`` (200/202), ``"rate_limited"`` (429), ``"retry"`` (5xx) or
    ``"dead"`` (401 and every other status: retrying cannot change the answer).
    """
    if status in (200, 202):
        return "ack"
    if status == 429:
        return "rate_limited"
    if 500 <= status <= 599:
        return "retry"
    return "dead"


def is_transient(status: int | None) -> bool:
    """Whether a failure with this last status may heal by itself (SPEC §7): 429, 5xx
    and no answer at all (None: timeout, connection error). A dead letter for such a
    failure is re-driven automatically once the server answers; any other status
    (400, 401, 409, ...) needs an operator."""
    return status is None or status == 429 or 500 <= status <= 599
