"""The open-loop load engine: requests at a constant arrival rate, latency measured
from each request's *intended* send time.

Request ``i`` of a rate ``R`` is due at ``t0 + i / R`` whether or not earlier requests
have been answered. A closed-loop client (wrk, ab: send, wait, send) stops sending while
the server stalls, so the stall delays one request per connection instead of every
request that should have been sent meanwhile ("coordinated omission"); here those
requests wait in the pool's queue and their latency counts the wait.

The generator itself can fall behind (a busy core, a GC pause): every request's
*start lag* (when it really started minus when it was due) is recorded too, and a run
whose p99 start lag exceeds ``max_lag_s`` is marked invalid, with the reason, instead
of reporting the generator's delay as the server's latency.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from flk_fast.benchsuite.http import HttpPool, RequestFailed
from flk_fast.benchsuite.options import PERCENTILES

__all__ = [
    "sleep_until",
    "LoadPlan",
    "RateResult",
    "run_rate",
]

_US = 1_000_000
#: Latencies are recorded in microseconds from 1 us to 10 minutes, 3 significant
#: digits (0.1 % error); the per-second timeline uses 2 (1 %) to stay small.
_MAX_US = 600 * _US
#: Statuses that count as a success; 202 is a success that escalated (SPEC §7 step 6).
OK_STATUSES = (200, 202)


#: Event-loop timers fire up to ~1 ms late (libuv and epoll take whole milliseconds),
#: which adds ~0.5 ms of start lag to every request at low rates; so the last stretch
#: before a deadline is spent yielding to the loop instead (responses keep being
#: read). That costs up to this much CPU per wait, so only waits longer than
#: :data:`_SPIN_ABOVE_S` spin (below ~400 req/s); at higher rates the lag is at most
#: a millisecond and is reported as start lag.
_SPIN_S = 0.0012
_SPIN_ABOVE_S = 2 * _SPIN_S


async def sleep_until(
    deadline: float, clock: Callable[[], float] = time.perf_counter, spin: bool = True
) -> None:
    """Sleep until ``clock() >= deadline``; with ``spin``, to a tenth of a ms or so."""
    coarse = deadline - clock() - (_SPIN_S if spin else 0.0)
    if coarse > 0:
        await asyncio.sleep(coarse)
    while spin and clock() < deadline:
        await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """One constant-rate run."""

    rate: float
    duration_s: float
    timeout_s: float = 10.0
    max_lag_s: float = 0.010

    @property
    def requests(self) -> int:
        return max(1, round(self.rate * self.duration_s))


@dataclass(slots=True)
class _Second:
    """Latencies of the requests due in one second of the run."""

    hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 2))
    errors: int = 0


def _us(seconds: float) -> int:
    return min(_MAX_US, max(1, round(seconds * _US)))


@dataclass(slots=True)
class RateResult:
    """What one rate gave. Latencies in microseconds inside, milliseconds outside.

    During the run a request costs three appends to flat arrays; the histograms are
    built by :meth:`finish` once the schedule is over (recording into HdrHistogram
    costs a few microseconds of Python each, which the generator's loop cannot spare
    at 15 000 req/s).
    """

    plan: LoadPlan
    latency: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 3))
    lag: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 2))
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    seconds: list[_Second] = field(default_factory=list)
    sent: int = 0
    send_span_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    _due: array = field(default_factory=lambda: array("d"))
    _latency_us: array = field(default_factory=lambda: array("q"))
    _lag_us: array = field(default_factory=lambda: array("q"))
    _failed_due: array = field(default_factory=lambda: array("d"))

    # ------------------------------------------------------------ recording
    def record_lag(self, lag_s: float) -> None:
        self._lag_us.append(_us(lag_s))

    def record(self, due_offset: float, latency_s: float) -> None:
        self._due.append(due_offset)
        self._latency_us.append(_us(latency_s))

    def record_failure(self, due_offset: float, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self._failed_due.append(due_offset)

    def finish(self) -> None:
        """Build the histograms from what the run recorded."""
        for us in self._lag_us:
            self.lag.record_value(us)
        for due, us in zip(self._due, self._latency_us, strict=True):
            self.latency.record_value(us)
            self._second(due).hist.record_value(us)
        for due in self._failed_due:
            self._second(due).errors += 1
        for a in (self._due, self._latency_us, self._lag_us, self._failed_due):
            del a[:]

    def _second(self, due_offset: float) -> _Second:
        s = max(0, int(due_offset))
        while len(self.seconds) <= s:
            self.seconds.append(_Second())
        return self.seconds[s]

    # ------------------------------------------------------------ derived
    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())

    @property
    def achieved_rate(self) -> float:
        """Requests started per second over the send phase (intended: ``plan.rate``)."""
        return self.sent / self.send_span_s if self.send_span_s > 0 else 0.0

    @property
    def error_ratio(self) -> float:
        """Requests without a 200/202 (other statuses, timeouts, resets) per request."""
        ok = sum(self.statuses.get(s, 0) for s in OK_STATUSES)
        return 1.0 - ok / self.requests if self.requests else 0.0

    @property
    def escalation_ratio(self) -> float:
        """202 (escalated or not accepted, SPEC §7) per 200/202 answer."""
        ok = sum(self.statuses.get(s, 0) for s in OK_STATUSES)
        return self.statuses.get(202, 0) / ok if ok else 0.0

    def percentiles_ms(self, hist: HdrHistogram | None = None) -> dict[str, float]:
        h = self.latency if hist is None else hist
        if h.get_total_count() == 0:
            return {k: float("nan") for k in PERCENTILES}
        out = {k: h.get_value_at_percentile(p) / 1000 for k, p in PERCENTILES.items()}
        out["max"] = h.get_max_value() / 1000
        return out

    @property
    def lag_p99_ms(self) -> float:
        return self.lag.get_value_at_percentile(99.0) / 1000 if self.sent else 0.0

    @property
    def invalid_reason(self) -> str:
        """Why the schedule was not kept ('' when it was)."""
        limit_ms = self.plan.max_lag_s * 1000
        if not self.statuses:
            failures = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items()))
            return (
                f"no request got an HTTP answer ({failures}): nothing to measure; "
                "check the URL and the TLS options"
            )
        if self.lag_p99_ms > limit_ms:
            return (
                f"the generator fell behind its schedule: p99 start lag "
                f"{self.lag_p99_ms:.1f} ms > {limit_ms:g} ms (achieved "
                f"{self.achieved_rate:.0f} of {self.plan.rate:g} req/s; generator CPU "
                f"{self.cpu_share:.0%}): use fewer req/s per generator or a less "
                "busy machine"
            )
        return ""

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def timeline(self) -> list[dict[str, float]]:
        """Per second of intended send time: p50, p99, max (ms) and errors."""
        out = []
        for i, s in enumerate(self.seconds):
            pct = self.percentiles_ms(s.hist)
            out.append(
                {
                    "second": i,
                    "requests": s.hist.get_total_count() + s.errors,
                    "errors": s.errors,
                    "p50": pct["p50"],
                    "p99": pct["p99"],
                    "max": pct["max"],
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.plan.rate,
            "duration_s": self.plan.duration_s,
            "requests": self.requests,
            "achieved_rate": round(self.achieved_rate, 1),
            "latency_ms": _finite(self.percentiles_ms()),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": dict(sorted(self.failures.items())),
            "error_ratio": self.error_ratio,
            "escalation_ratio": self.escalation_ratio,
            "start_lag_p99_ms": self.lag_p99_ms,
            "generator_cpu": round(self.cpu_share, 3),
            "valid": not self.invalid_reason,
            "invalid_reason": self.invalid_reason,
            "timeline": [_finite(p) for p in self.timeline()],
            # The whole histogram (HdrHistogram base64), for merging or re-analysis.
            "histogram": self.latency.encode().decode("ascii"),
        }


def _finite(doc: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN: a percentile of no answers is null.
    return {k: None if v != v else v for k, v in doc.items()}


Progress = Callable[[float], None]


async def run_rate(
    pool: HttpPool,
    next_body: Callable[[], bytes],
    plan: LoadPlan,
    progress: Progress | None = None,
) -> RateResult:
    """Send ``rate * duration`` requests on schedule; wait for every answer."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    result = RateResult(plan)
    n = plan.requests
    interval = 1.0 / plan.rate
    spin = interval > _SPIN_ABOVE_S
    pending: set[asyncio.Task[None]] = set()

    async def one(body: bytes, due: float) -> None:
        start = clock()
        result.record_lag(start - due)
        try:
            async with asyncio.timeout(plan.timeout_s - (start - due)):
                status = await pool.post(body)
        except TimeoutError:
            result.record_failure(due - t0, "timeout")
            return
        except RequestFailed as exc:
            result.record_failure(due - t0, exc.kind)
            return
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.record(due - t0, clock() - due)

    cpu0 = time.process_time()
    t0 = clock() + 0.005
    next_tick = 1.0
    i = 0
    while i < n:
        now = clock()
        # Everything already due starts now (a burst after a stall, so the lag shows).
        while i < n and t0 + i * interval <= now:
            task = loop.create_task(one(next_body(), t0 + i * interval))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        if progress is not None and now - t0 >= next_tick:
            progress(now - t0)
            next_tick += 1.0
        if i < n:
            await sleep_until(t0 + i * interval, clock, spin)
    result.sent = n
    result.send_span_s = max(clock() - t0, n * interval)
    if pending:
        await asyncio.gather(*pending)
    result.wall_s = clock() - t0
    result.cpu_s = time.process_time() - cpu0
    result.finish()
    return result
