"""The agent's progress display: a one-line bar on a terminal, a log line otherwise.

It only reads the run's counters (:class:`~flk_fast.agent.runner.AgentSummary`) and the
byte position of a file input; the agent calls :meth:`Progress.update` after each group
of windows and once, forced, at the end of ``drain()``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flk_fast.agent.runner import AgentSummary

__all__ = ["Progress"]

# The agent's logger: the progress lines are part of its log, filtered with it.
log = logging.getLogger("flk_fast.agent")


class Progress:
    """A one-line bar on a terminal, a log line every ``every_s`` otherwise.

    ``mode`` is ``--progress``: ``auto`` (bar on a terminal, else log), ``bar``,
    ``log`` or ``off``. A bar is redrawn at most every 0.2 s.
    """

    def __init__(self, mode: str, every_s: float, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = ("bar" if tty else "log") if mode == "auto" else mode
        self.every_s = every_s if self.mode == "log" else 0.2
        self._last = 0.0
        self._drawn = False

    def update(
        self, s: AgentSummary, total_bytes: int, done_bytes: int, *, force: bool = False
    ) -> None:
        if self.mode == "off":
            return
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        rate = s.events / s.elapsed_s if s.elapsed_s > 0 else 0.0
        if self.mode == "bar":
            frac = min(1.0, done_bytes / total_bytes) if total_bytes else 0.0
            bar = "#" * int(frac * 20)
            pct = f"{frac:6.1%} " if total_bytes else ""
            line = (
                f"\r[{bar:<20}] {pct}{s.events:,} ev  {s.windows} win  "
                f"{s.accepted + s.escalated} acked  {s.dead_lettered} dlq  "
                f"{rate:,.0f} ev/s "
            )
            self.stream.write(line)
            self._drawn = True
        else:
            log.info(
                "progress: events=%d windows=%d acked=%d dead=%d pending=%d "
                "rate=%.0f/s",
                s.events,
                s.windows,
                s.accepted + s.escalated,
                s.dead_lettered,
                s.windows
                + s.resent
                + s.redriven
                - s.accepted
                - s.escalated
                - s.dead_lettered,
                rate,
            )
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
