"""Event input for ``flk build-pcs``: CSV (``timestamp,x,y,z`` with a header) or JSONL.

Each event keeps the ORIGINAL text of its x, y and z values, because the canonical rows
of SPEC §4.4 (``f"{t:.9f},{x},{y},{z}"``) hash and compress the cells as written:
``0.10`` and ``0.1`` are different rows. Input is read as a stream and handed out in
windows of at most ``window`` events, so memory is bounded by the window.

Malformed input raises :class:`flk_fast.errors.InputError` naming the source and the
1-based line number: a missing column, a non-numeric or non-finite value, an empty file
(no header), a bad JSON line.

Public API
----------
:class:`Events`
    One window: ``t`` (n,), ``points`` (n, 3) float64, ``cells`` (the x/y/z text),
    ``lines`` (1-based line numbers); :meth:`Events.canonical_rows`.
:func:`read_events`
    Stream windows from a path, ``-`` (stdin) or a file object.
:func:`canonical_row`
    The SPEC §4.4 row of one event.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np
from numpy.typing import NDArray

from flk_fast.errors import InputError

__all__ = ["CSV_COLUMNS", "Events", "canonical_row", "read_events"]

CSV_COLUMNS = ("timestamp", "x", "y", "z")
Format = Literal["auto", "csv", "jsonl"]


def canonical_row(t: float, x: str, y: str, z: str) -> str:
    """SPEC §4.4 row: the timestamp with 9 decimals, then the x, y, z text as written.

    Examples
    --------
    >>> canonical_row(1.0, "0.1", "0.20", "3")
    '1.000000000,0.1,0.20,3'
    """
    return f"{t:.9f},{x},{y},{z}"


@dataclass(frozen=True, slots=True, eq=False)
class Events:
    """A window of events, in input order."""

    t: NDArray[np.float64]
    points: NDArray[np.float64]
    cells: tuple[tuple[str, str, str], ...]
    lines: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.cells)

    def canonical_rows(self) -> list[bytes]:
        """The SPEC §4.4 rows (UTF-8), one per event, without separators."""
        return [
            canonical_row(float(t), *c).encode("utf-8")
            for t, c in zip(self.t.tolist(), self.cells, strict=True)
        ]

    def canonical_bytes(self) -> bytes:
        """Rows joined by ``\\n``, no trailing newline: the bytes r and the Merkle root
        are computed over."""
        return b"\n".join(self.canonical_rows())

    @staticmethod
    def concat(parts: Iterable[Events]) -> Events:
        """One window from several, in order."""
        items = list(parts)
        if not items:
            return _empty()
        return Events(
            np.concatenate([p.t for p in items]),
            np.concatenate([p.points for p in items]).reshape(-1, 3),
            tuple(c for p in items for c in p.cells),
            tuple(n for p in items for n in p.lines),
        )


def _empty() -> Events:
    return Events(np.empty(0), np.empty((0, 3)), (), ())


def _number(text: str, what: str, source: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(
            f"{what} is not a number: {text!r}", source=source, position=line
        ) from None
    if not math.isfinite(value):
        raise InputError(
            f"{what} is not finite: {text!r}", source=source, position=line
        )
    return value


class _Window:
    """Accumulates events and cuts them into Events of at most ``size``."""

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.t: list[float] = []
        self.xyz: list[tuple[float, float, float]] = []
        self.cells: list[tuple[str, str, str]] = []
        self.lines: list[int] = []

    def add(
        self,
        t: float,
        xyz: tuple[float, float, float],
        cells: tuple[str, str, str],
        line: int,
    ) -> Events | None:
        self.t.append(t)
        self.xyz.append(xyz)
        self.cells.append(cells)
        self.lines.append(line)
        if self.size is not None and len(self.t) >= self.size:
            return self.take()
        return None

    def take(self) -> Events:
        out = Events(
            np.array(self.t, dtype=np.float64),
            np.array(self.xyz, dtype=np.float64).reshape(-1, 3),
            tuple(self.cells),
            tuple(self.lines),
        )
        self.t, self.xyz, self.cells, self.lines = [], [], [], []
        return out


def _csv_events(fh: IO[str], source: str, window: int | None) -> Iterator[Events]:
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        raise InputError(
            "empty input: expected a header 'timestamp,x,y,z'",
            source=source,
            position=1,
        )
    names = [h.strip().lower() for h in header]
    try:
        cols = [names.index(c) for c in CSV_COLUMNS]
    except ValueError:
        missing = [c for c in CSV_COLUMNS if c not in names]
        raise InputError(
            "header must name the columns timestamp,x,y,z; "
            f"missing {','.join(missing)}",
            source=source,
            position=1,
        ) from None
    need = max(cols) + 1
    acc = _Window(window)
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) < need:
            raise InputError(
                f"expected {len(names)} columns ({','.join(header)}), got {len(row)}",
                source=source,
                position=line,
            )
        t_txt, x_txt, y_txt, z_txt = (row[c] for c in cols)
        t = _number(t_txt, "timestamp", source, line)
        xyz = (
            _number(x_txt, "x", source, line),
            _number(y_txt, "y", source, line),
            _number(z_txt, "z", source, line),
        )
        done = acc.add(t, xyz, (x_txt, y_txt, z_txt), line)
        if done is not None:
            yield done
    if acc.t:
        yield acc.take()


def _jsonl_events(fh: IO[str], source: str, window: int | None) -> Iterator[Events]:
    acc = _Window(window)
    saw_any = False
    for line_no, text in enumerate(fh, start=1):
        if not text.strip():
            continue
        saw_any = True
        try:
            # parse_float/parse_int keep each number's original text (SPEC §4.4).
            obj = json.loads(
                text, parse_float=_Num, parse_int=_Num, parse_constant=_reject_constant
            )
        except ValueError as exc:
            raise InputError(
                f"not a JSON object: {exc}", source=source, position=line_no
            ) from None
        if not isinstance(obj, dict):
            raise InputError(
                "each line must be a JSON object", source=source, position=line_no
            )
        cells = []
        for key in CSV_COLUMNS:
            if key not in obj:
                raise InputError(
                    f"missing field {key!r}", source=source, position=line_no
                )
            if not isinstance(obj[key], _Num):  # a string, bool, null, list...
                raise InputError(
                    f"field {key!r} must be a JSON number",
                    source=source,
                    position=line_no,
                )
            cells.append(str(obj[key]))
        t = _number(cells[0], "timestamp", source, line_no)
        xyz = (
            _number(cells[1], "x", source, line_no),
            _number(cells[2], "y", source, line_no),
            _number(cells[3], "z", source, line_no),
        )
        done = acc.add(t, xyz, (cells[1], cells[2], cells[3]), line_no)
        if done is not None:
            yield done
    if not saw_any:
        raise InputError("empty input: no events", source=source, position=1)
    if acc.t:
        yield acc.take()


class _Num(str):
    """The source text of a JSON number (distinct from a JSON string's value)."""

    __slots__ = ()


def _reject_constant(name: str) -> str:
    raise ValueError(f"{name} is not a finite number")


def _detect(fh: IO[str], source: str) -> tuple[Literal["csv", "jsonl"], IO[str]]:
    lower = source.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl", fh
    if lower.endswith(".csv"):
        return "csv", fh
    first = fh.readline()
    rest = io.StringIO(first + fh.read()) if first else io.StringIO("")
    return ("jsonl" if first.lstrip().startswith("{") else "csv"), rest


def read_events(
    source: str | os.PathLike[str] | IO[str],
    *,
    format: Format = "auto",
    window: int | None = None,
) -> Iterator[Events]:
    """Stream the events of ``source`` in windows of at most ``window`` events.

    Parameters
    ----------
    source : path, ``"-"`` or text file object
        ``"-"`` reads stdin.
    format : {"auto", "csv", "jsonl"}
        ``auto`` goes by the file extension (``.csv``, ``.jsonl``/``.ndjson``), else by
        whether the first line starts with ``{``.
    window : int, optional
        Events per window; None yields a single window with everything.

    Yields
    ------
    Events
        Non-empty windows, in order.

    Raises
    ------
    InputError
        Malformed input, with the 1-based line number; an empty file.

    Examples
    --------
    >>> import io
    >>> data = io.StringIO("timestamp,x,y,z\\n1,0.10,2,3\\n2,4,5,6\\n")
    >>> [len(w) for w in read_events(data, window=1)]
    [1, 1]
    >>> events = read_events(io.StringIO("timestamp,x,y,z\\n1,0.10,2,3\\n"))
    >>> next(events).canonical_bytes()
    b'1.000000000,0.10,2,3'
    """
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        if name == "-":
            yield from _read(sys.stdin, "<stdin>", format, window)
            return
        try:
            fh = open(name, encoding="utf-8", newline="")
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", source=name) from None
        with fh:
            yield from _read(fh, name, format, window)
    else:
        yield from _read(source, getattr(source, "name", "<stream>"), format, window)


def _read(
    fh: IO[str], source: str, format: Format, window: int | None
) -> Iterator[Events]:
    kind: str = format
    if kind == "auto":
        kind, fh = _detect(fh, source if isinstance(source, str) else "")
    try:
        if kind == "csv":
            yield from _csv_events(fh, source, window)
        elif kind == "jsonl":
            yield from _jsonl_events(fh, source, window)
        else:
            raise ValueError(f"format must be auto, csv or jsonl, got {format!r}")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", source=source) from None
    except csv.Error as exc:
        raise InputError(f"bad CSV: {exc}", source=source) from None
