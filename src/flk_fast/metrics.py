"""Prometheus metric families of the ingest server (SPEC §7).

Imports nothing from flk_fast, so any part may use it. The families live in a registry
owned by one :class:`ServerMetrics` object rather than in prometheus-client's global
default registry: tests build many apps in one process and a global registry would
refuse the second registration.

Multiprocess mode (``flk serve --workers N``): prometheus-client picks its value storage
when ``prometheus_client`` is first imported, from ``PROMETHEUS_MULTIPROC_DIR``. The
runner therefore sets that variable *before* it starts the worker processes; each worker
writes its counters to mmap files in the directory, and any worker's ``/metrics`` sums
every worker's files through a ``MultiProcessCollector``.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "LATENCY_BUCKETS",
    "ServerMetrics",
    "multiprocess_dir",
]

#: Seconds. Fine below 10 ms because the p99 target is 10 ms at 1000 req/s.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def multiprocess_dir() -> str | None:
    """The prometheus multiprocess directory in effect for this process, if any."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and os.path.isdir(path) else None


class ServerMetrics:
    """The counters of SPEC §7 plus a request-latency histogram by route and status.

    Counter names follow SPEC §7 exactly (``flk_ingest`` is exposed as
    ``flk_ingest_total``); the dedup hit ratio is ``flk_dedup_hits_total /
    flk_ingest_total``.
    """

    def __init__(self) -> None:
        # Families are created unregistered and added to our own registry, so two apps
        # in one process never collide. In multiprocess mode values go to the mmap files
        # whatever the registry, and exposition reads the files instead.
        self.registry = CollectorRegistry(auto_describe=True)
        self._mp_dir = multiprocess_dir()

        def counter(name: str, doc: str) -> Counter:
            c = Counter(name, doc, registry=None)
            if self._mp_dir is None:
                self.registry.register(c)
            return c

        self.ingest = counter("flk_ingest", "PCS submissions that reached the pipeline")
        self.accepted = counter("flk_accepted", "PCS judged accepted (200 or 202)")
        self.escalated = counter("flk_escalated", "PCS judged escalated (202)")
        self.dedup_hits = counter("flk_dedup_hits", "Submissions answered from dedup")
        self.signature_errors = counter(
            "flk_signature_errors", "Submissions refused with 401"
        )
        self.wal_errors = counter("flk_wal_errors", "Inbox WAL append/ack failures")
        self.invalid = counter("flk_invalid", "Submissions refused with 400")
        self.rate_limited = counter("flk_rate_limited", "Submissions refused with 429")
        self.dedup_errors = counter(
            "flk_dedup_errors", "Dedup store unavailable (answered 503)"
        )
        self.dedup_conflicts = counter(
            "flk_dedup_conflicts",
            "Twins of a stored pcs_id with other content, refused with 409",
        )
        self.dedup_damaged = counter(
            "flk_dedup_damaged",
            "Stored outcomes that failed their checksum (answered 503, never served)",
        )
        self.replayed = counter("flk_replayed", "WAL records re-judged at start-up")
        self.bad_http = counter(
            "flk_bad_http", "Malformed HTTP requests refused by the HTTP parser (400)"
        )
        self.latency = Histogram(
            "flk_request_duration_seconds",
            "HTTP request latency by route and status",
            ("route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        if self._mp_dir is None:
            self.registry.register(self.latency)
        # labels() hashes and validates its arguments on every call; the (route, status)
        # space is tiny, so the children are cached.
        self._children: dict[tuple[str, int], object] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Record one request's latency."""
        child = self._children.get((route, status))
        if child is None:
            child = self.latency.labels(route, str(status))
            self._children[(route, status)] = child
        child.observe(seconds)  # type: ignore[attr-defined]

    def render(self) -> bytes:
        """The Prometheus text exposition of this process, or of every worker."""
        if self._mp_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._mp_dir)
        return generate_latest(registry)
