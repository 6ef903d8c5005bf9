"""Prometheus metrics of one agent (``flk agent --metrics-port / --metrics-textfile``).

The counters are read from the run's :class:`~flk_fast.agent.runner.AgentSummary` at
scrape time (a collector, not increments on the hot path), so metrics cost nothing per
event; only the delivery latency is observed per request. The outbox gauges (DLQ
entries, bytes on disk) are refreshed by the agent every few seconds from its work
thread, where LMDB may be read.

Names (``flk_agent_*``; Prometheus adds ``_total`` to counters) are listed in
docs/agent.md; alert rules match on them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["AgentMetrics"]

#: Delivery latency buckets (seconds): a loopback answer takes ~1 ms, a send that
#: goes through every retry of SPEC §7 about 31 s.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


#: ``reason`` labels of flk_agent_dead_lettered_total: transient (429, 5xx, no answer;
#: re-driven by itself), rejected (other 4xx), lost (a damaged outbox record whose
#: window could not be summarised again), unreadable (an outbox record not a PCS).
DEAD_REASONS = ("transient", "rejected", "lost", "unreadable")


class _SummaryCollector(Collector):
    def __init__(self, metrics: AgentMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Any]:
        s = self._m.summary()
        for name, doc, value in (
            ("events", "events read from the input", s.events),
            ("windows", "windows summarised into a PCS", s.windows),
            ("acked", "PCS acknowledged (200 or 202)", s.accepted + s.escalated),
            ("escalated", "PCS the server escalated (202)", s.escalated),
            ("retries", "resends after a 5xx, 429, timeout or reset", s.retries),
            ("requests", "HTTP submissions, retries included", s.requests),
            ("malformed", "input lines skipped as malformed", s.malformed),
            ("redriven", "transient dead letters re-driven", s.redriven),
        ):
            yield CounterMetricFamily(f"flk_agent_{name}", doc, value=value)
        dead = CounterMetricFamily(
            "flk_agent_dead_lettered",
            "PCS moved to the dead-letter queue, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(self._m.dead_by_reason.items()):
            dead.add_metric([reason], n)
        yield dead
        pending = s.windows + s.resent + s.redriven
        pending -= s.accepted + s.escalated + s.dead_lettered
        for name, doc, value in (
            ("pending", "PCS made but not yet acknowledged nor dead-lettered",
             max(0, pending)),
            ("dlq_entries", "entries in the dead-letter queue", self._m.dlq_entries),
            ("outbox_bytes", "disk used by the outbox and the DLQ",
             self._m.outbox_bytes),
            ("last_delivery_timestamp_seconds",
             "Unix time of the last acknowledged delivery (0: none yet)",
             self._m.last_delivery),
        ):  # fmt: skip
            yield GaugeMetricFamily(f"flk_agent_{name}", doc, value=value)


class AgentMetrics:
    """The agent's registry. ``summary`` returns the live AgentSummary."""

    def __init__(self, summary: Callable[[], Any]) -> None:
        self.summary = summary
        self.registry = CollectorRegistry()
        # Every reason present from the start: an alert on rate() needs the series
        # before the first dead letter, not only after it.
        self.dead_by_reason = dict.fromkeys(DEAD_REASONS, 0)
        self.dlq_entries = 0
        self.outbox_bytes = 0
        self.last_delivery = 0.0
        self.latency = Histogram(
            "flk_agent_delivery_seconds",
            "time from the first send of a PCS to its outcome, retries included",
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_SummaryCollector(self))

    def delivered(self, seconds: float, *, acked: bool) -> None:
        self.latency.observe(seconds)
        if acked:
            self.last_delivery = time.time()

    def dead(self, reason: str) -> None:
        self.dead_by_reason[reason] = self.dead_by_reason.get(reason, 0) + 1

    def write_textfile(self, path: str) -> None:
        """node-exporter's textfile collector format, written atomically (a temporary
        file renamed over ``path``), so a scrape never sees half a file."""
        write_to_textfile(path, self.registry)
