"""The JSON log format of every long-running command (``flk serve``, ``flk agent``).

One line per record: ``{"ts", "level", "logger", "msg", "request_id"?, **extra}``. An
exception is one short field (``exc``: type and message, ``at``: the innermost frame);
the whole traceback only at ``--log-level debug``, because a failure that repeats (a
full disk, a store that is down) otherwise writes kilobytes of identical traceback.
Light on imports on purpose: the agent uses it without loading the server.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import traceback

__all__ = ["JsonFormatter", "REQUEST_ID", "trace_fatal_signals"]


def trace_fatal_signals() -> None:
    """On SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT, print every thread's Python stack
    to stderr before the process dies (``faulthandler``). LMDB maps its files: a page
    damaged in a way no check sees, or a file truncated under a running process, ends
    in SIGBUS inside C code, which Python cannot turn into an exception; without this
    the process vanished without a line. The stack names the store's module."""
    import faulthandler
    import sys

    if not faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr, all_threads=True)


#: The current request's id, picked up by :class:`JsonFormatter`.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "flk_request_id", default=""
)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, **extra}`` on one line."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
        "message",
        "asctime",
    }

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid:
            doc["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in self._SKIP and not key.startswith("_"):
                doc[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["exc"] = _one_line(exc)
            tb = exc.__traceback__
            if tb is not None:
                frames = traceback.extract_tb(tb)
                last = frames[-1]
                where = os.path.basename(last.filename)
                doc["at"] = f"{where}:{last.lineno} {last.name}"
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (at most 300 characters), with the causes that
    say more than their wrapper (``... <- OSError: [Errno 28] No space left``)."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(parts) < 3:
        seen.add(id(cur))
        text = " ".join(str(cur).split())
        parts.append(f"{type(cur).__name__}: {text}" if text else type(cur).__name__)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    out = " <- ".join(parts)
    return out if len(out) <= 300 else out[:297] + "..."
