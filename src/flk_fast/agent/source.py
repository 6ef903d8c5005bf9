"""Streaming event input for the agent: files, a file being appended to, stdin.

The agent needs more from its input than a parser: it must know the byte offset and
line number after every event (to checkpoint exactly), read incrementally with bounded
memory, wait for more data in follow mode, and report each malformed line with its
position. This module does that on byte blocks:

* :class:`LineSplitter` turns arbitrary chunks into blocks of complete lines, keeping
  the absolute offset and line number of the first line of each block.
* :func:`parse_csv_block` / :func:`parse_jsonl_block` turn a block into an
  :class:`EventBatch` (timestamps, points, the original ``x,y,z`` text for the canonical
  rows of SPEC §4.4, and per-event end offsets and line numbers) plus a list of
  :class:`Malformed` lines.
* :class:`FileSource` / :class:`StdinSource` read chunks without ever blocking the
  caller for long, so the agent's loop can keep acknowledging deliveries meanwhile.

* :func:`read_batch` reads a whole file (or stdin) into one batch and raises
  :class:`~flk_fast.errors.InputError` at the first malformed line: ``flk build-pcs``
  reads through it, so the agent and ``build-pcs`` share one parser.

CSV columns are read by position. An optional header on line 1 (a line with no numeric
cell) must be exactly ``timestamp,x,y,z`` (case and surrounding spaces ignored);
any other header is an InputError for the whole input, because a reordered or wider
header would otherwise swap columns or make every line malformed.

Lines longer than ``MAX_LINE`` bytes are reported as malformed and skipped without
being held in memory (a file with no newline would otherwise grow the buffer without
bound). Coordinates beyond ``max_abs`` (when given) are malformed too: the box counts
of SPEC §4.1 cannot represent their voxel in int64.

The CSV fast path parses a whole block with NumPy (``np.fromstring`` over the block,
a per-line comma count to make sure no line has a missing or extra cell, a finiteness
check) and only falls back to line-by-line parsing, which pinpoints the bad lines,
when that check fails.
"""

from __future__ import annotations

import csv
import math
import os
import select
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import msgspec
import numpy as np

from flk_fast.errors import InputError

__all__ = [
    "CSV_COLUMNS",
    "MAX_LINE",
    "EventBatch",
    "FileSource",
    "LineSplitter",
    "Malformed",
    "StdinSource",
    "guess_format",
    "parse_block",
    "parse_csv_block",
    "parse_jsonl_block",
    "read_batch",
]

#: Bytes read at a time: amortises parsing; 1 MiB cost 10 MB more peak RSS.
CHUNK = 1 << 18
#: Longest input line kept; a longer one is reported as malformed and skipped.
MAX_LINE = 1 << 20
#: The CSV columns, in the only order accepted (a header must spell them so).
CSV_COLUMNS = ("timestamp", "x", "y", "z")


@dataclass(frozen=True, slots=True)
class Malformed:
    """One input line that is not an event. ``line`` is 1-based."""

    line: int
    offset: int
    reason: str
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.text!r}"


@dataclass(slots=True)
class EventBatch:
    """Parsed events of one block, in input order.

    ``tails[i]`` is the original text of event i's ``x,y,z`` cells joined by ``,``
    (what SPEC §4.4 puts after the timestamp); ``ends[i]`` the absolute byte offset just
    after event i's line (its newline included); ``lines[i]`` its 1-based line number.
    """

    t: np.ndarray
    xyz: np.ndarray
    tails: list[bytes]
    ends: np.ndarray
    lines: np.ndarray

    @classmethod
    def empty(cls) -> EventBatch:
        return cls(
            np.empty(0),
            np.empty((0, 3)),
            [],
            np.empty(0, np.int64),
            np.empty(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.tails)

    @classmethod
    def concat(cls, parts: Sequence[EventBatch]) -> EventBatch:
        """One batch from several, in order."""
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.t for p in parts]),
            np.concatenate([p.xyz for p in parts]).reshape(-1, 3),
            [x for p in parts for x in p.tails],
            np.concatenate([p.ends for p in parts]),
            np.concatenate([p.lines for p in parts]),
        )

    def slice(self, start: int, stop: int) -> EventBatch:
        return EventBatch(
            self.t[start:stop],
            self.xyz[start:stop],
            self.tails[start:stop],
            self.ends[start:stop],
            self.lines[start:stop],
        )


@dataclass(slots=True)
class LineSplitter:
    """Cuts a byte stream into blocks of whole lines, tracking offset and line.

    A line longer than ``max_line`` bytes is not kept: it is recorded in
    :attr:`overlong` (a :class:`Malformed` the caller reports, then clears) and its
    bytes are dropped up to its newline, so memory stays bounded by ``max_line`` plus
    one chunk even for an input without any newline.
    """

    offset: int = 0  # absolute offset of the first byte not yet returned
    line: int = 1  # line number of the first line not yet returned
    max_line: int = MAX_LINE
    _rest: bytearray = field(default_factory=bytearray)
    _skipping: bool = False  # inside an overlong line: drop up to its newline
    overlong: list[Malformed] = field(default_factory=list)

    def _drop_overlong(self, final: bool) -> None:
        """Drop the overlong line at the head of the buffer (or the part seen)."""
        while True:
            if not self._skipping:
                head = self._rest.find(b"\n", 0, self.max_line + 1)
                if head != -1 or len(self._rest) <= self.max_line:
                    return
                self.overlong.append(
                    Malformed(
                        self.line,
                        self.offset,
                        f"line longer than {self.max_line} bytes",
                        bytes(self._rest[:80]).decode("utf-8", "replace") + "...",
                    )
                )
                self._skipping = True
            nl = self._rest.find(b"\n")
            if nl == -1:
                self.offset += len(self._rest)
                self._rest.clear()
                if final:  # the overlong line was the unterminated last one
                    self.line += 1
                    self._skipping = False
                return
            self.offset += nl + 1
            self.line += 1
            del self._rest[: nl + 1]
            self._skipping = False

    def feed(self, chunk: bytes, *, final: bool = False) -> tuple[bytes, int, int]:
        """Add ``chunk``; return ``(block, block_offset, block_first_line)`` where block
        holds every complete line so far (and the unterminated last one if ``final``).
        """
        self._rest += chunk
        # Every line but the first was cut from one chunk, so only the first can have
        # grown past max_line across feeds.
        self._drop_overlong(final)
        cut = len(self._rest) if final else self._rest.rfind(b"\n") + 1
        if cut <= 0:
            return b"", self.offset, self.line
        block = bytes(self._rest[:cut])
        del self._rest[:cut]
        start_off, start_line = self.offset, self.line
        self.offset += len(block)
        self.line += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        return block, start_off, start_line

    @property
    def buffered(self) -> int:
        return len(self._rest)


def _line_bounds(block: bytes) -> tuple[list[bytes], np.ndarray]:
    """Lines of ``block`` without terminators and each line's end offset (after \\n)."""
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    nl = np.flatnonzero(np.frombuffer(block, np.uint8) == 10) + 1
    if len(nl) < len(lines):  # unterminated final line
        nl = np.append(nl, len(block))
    return lines, nl.astype(np.int64)


def _check_header(cells: Sequence[str], source: str) -> None:
    """Columns are read by position: a header naming them otherwise is refused."""
    names = [c.strip().lower() for c in cells]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0][1:]
    if tuple(names) != CSV_COLUMNS:
        raise InputError(
            f"the header must be exactly {','.join(CSV_COLUMNS)} (columns are read "
            f"in that order), got {','.join(cells)!r}",
            source=source,
            position=1,
        )


def _is_header(cells: Sequence[str]) -> bool:
    """A header names columns: no cell is a number. A line with some numeric cells is a
    malformed event, reported, never mistaken for a header and dropped."""
    if not cells:
        return False
    for c in cells:
        try:
            float(c)
        except ValueError:
            continue
        return False
    return True


def _slow_csv(
    lines: list[bytes],
    ends: np.ndarray,
    base_off: int,
    first_line: int,
    max_abs: float | None = None,
) -> tuple[EventBatch, list[Malformed]]:
    """Line by line with the csv module: exact cell text, exact error positions."""
    ts: list[float] = []
    pts: list[tuple[float, float, float]] = []
    tails: list[bytes] = []
    keep: list[int] = []
    bad: list[Malformed] = []
    for i, raw in enumerate(lines):
        lineno = first_line + i
        start = base_off + (int(ends[i - 1]) if i else 0)
        text = raw.rstrip(b"\r")
        if not text.strip():
            continue  # blank lines separate nothing and carry no event
        try:
            s = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(
                Malformed(lineno, start, f"not UTF-8 ({exc.reason})", repr(text)[2:-1])
            )
            continue
        try:
            cells = next(csv.reader([s]))
        except csv.Error as exc:  # e.g. a NUL byte
            bad.append(Malformed(lineno, start, f"bad CSV ({exc})", s))
            continue
        if len(cells) != 4:
            bad.append(
                Malformed(lineno, start, f"expected 4 cells, got {len(cells)}", s)
            )
            continue
        try:
            vals = [float(c) for c in cells]
        except ValueError:
            bad.append(Malformed(lineno, start, "a cell is not a number", s))
            continue
        if not all(math.isfinite(v) for v in vals):
            bad.append(Malformed(lineno, start, "a value is not finite", s))
            continue
        if max_abs is not None and max(abs(v) for v in vals[1:]) > max_abs:
            bad.append(Malformed(lineno, start, _too_large(max_abs), s))
            continue
        ts.append(vals[0])
        pts.append((vals[1], vals[2], vals[3]))
        tails.append(",".join(cells[1:]).encode())
        keep.append(i)
    idx = np.asarray(keep, np.int64)
    batch = EventBatch(
        np.asarray(ts, np.float64),
        np.asarray(pts, np.float64).reshape(-1, 3),
        tails,
        base_off + ends[idx],
        first_line + idx,
    )
    return batch, bad


def _too_large(max_abs: float) -> str:
    return f"a coordinate is beyond +-{max_abs:g} (its voxel overflows int64)"


def parse_csv_block(
    block: bytes,
    base_off: int = 0,
    first_line: int = 1,
    *,
    source: str = "",
    max_abs: float | None = None,
) -> tuple[EventBatch, list[Malformed]]:
    """Parse ``timestamp,x,y,z`` lines. A header is allowed on line 1 only.

    Raises
    ------
    InputError
        Line 1 is a header other than ``timestamp,x,y,z``.

    Examples
    --------
    >>> batch, bad = parse_csv_block(b"timestamp,x,y,z\\n1,0.10,2,3\\n2,x,1,1\\n")
    >>> batch.tails, batch.lines.tolist(), batch.ends.tolist()
    ([b'0.10,2,3'], [2], [27])
    >>> print(bad[0])
    line 3: a cell is not a number: '2,x,1,1'
    """
    if not block:
        return EventBatch.empty(), []
    if first_line == 1:
        first, nl, rest = block.partition(b"\n")
        cells = next(csv.reader([first.decode("utf-8", "replace")]), [])
        if first.strip() and _is_header(cells):
            _check_header(cells, source)
            if not nl:
                return EventBatch.empty(), []
            return parse_csv_block(
                rest, base_off + len(first) + 1, 2, source=source, max_abs=max_abs
            )
    lines, ends = _line_bounds(block)
    n = len(lines)
    clean = (
        b'"' not in block
        and b"\r" not in block
        and b"\n\n" not in block
        and not block.startswith(b"\n")
    )
    if clean:
        # One comma count per line: a line with a missing cell next to one with an
        # extra cell would otherwise still give 4 values per line on average.
        arr = np.frombuffer(block, np.uint8)
        commas = np.flatnonzero(arr == 44)
        per_line = np.diff(np.searchsorted(commas, np.concatenate(([0], ends))))
        if np.all(per_line == 3):
            try:
                vals = np.fromstring(block.replace(b"\n", b","), sep=",")  # noqa: NPY201
            except ValueError:
                vals = None
            if (
                vals is not None
                and len(vals) == 4 * n
                and np.isfinite(vals).all()
                and (
                    max_abs is None
                    or np.abs(vals.reshape(n, 4)[:, 1:]).max() <= max_abs
                )
            ):
                v = vals.reshape(n, 4)
                tails = [ln.partition(b",")[2] for ln in lines]
                return (
                    EventBatch(
                        v[:, 0].copy(),
                        v[:, 1:].copy(),
                        tails,
                        base_off + ends,
                        np.arange(first_line, first_line + n, dtype=np.int64),
                    ),
                    [],
                )
    return _slow_csv(lines, ends, base_off, first_line, max_abs)


class _JsonEvent(msgspec.Struct):
    x: msgspec.Raw
    y: msgspec.Raw
    z: msgspec.Raw
    # msgspec cannot make Raw optional with None; an empty Raw means "absent".
    timestamp: msgspec.Raw = msgspec.Raw(b"")
    t: msgspec.Raw = msgspec.Raw(b"")


_json_event = msgspec.json.Decoder(_JsonEvent)


def _raw_number(raw: msgspec.Raw) -> tuple[float, bytes]:
    text = bytes(raw)
    if text.startswith(b'"'):  # a number written as a JSON string: keep its content
        text = msgspec.json.decode(text).encode()
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value, text


def parse_jsonl_block(
    block: bytes,
    base_off: int = 0,
    first_line: int = 1,
    *,
    source: str = "",
    max_abs: float | None = None,
) -> tuple[EventBatch, list[Malformed]]:
    """Parse JSON Lines: one object per line with ``timestamp`` (or ``t``), ``x``,
    ``y``, ``z``. The numbers' original text is kept (``0.10`` stays ``0.10``).
    Absurdly nested values are a malformed line, like any other bad JSON."""
    if not block:
        return EventBatch.empty(), []
    lines, ends = _line_bounds(block)
    ts: list[float] = []
    pts: list[tuple[float, float, float]] = []
    tails: list[bytes] = []
    keep: list[int] = []
    bad: list[Malformed] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        lineno = first_line + i
        start = base_off + (int(ends[i - 1]) if i else 0)
        try:
            ev = _json_event.decode(raw)
            tr = ev.timestamp if len(ev.timestamp) else ev.t
            if not len(tr):
                raise ValueError("missing timestamp")
            t, _ = _raw_number(tr)
            x, xt = _raw_number(ev.x)
            y, yt = _raw_number(ev.y)
            z, zt = _raw_number(ev.z)
            if max_abs is not None and max(abs(x), abs(y), abs(z)) > max_abs:
                raise ValueError(_too_large(max_abs))
        except (msgspec.DecodeError, ValueError, UnicodeDecodeError) as exc:
            text = raw.decode("utf-8", "replace").rstrip("\r")
            bad.append(Malformed(lineno, start, str(exc) or "not an event", text))
            continue
        except RecursionError:
            # msgspec recurses into nested arrays/objects even for a Raw field.
            text = raw[:200].decode("utf-8", "replace").rstrip("\r")
            bad.append(Malformed(lineno, start, "JSON nested too deeply", text))
            continue
        ts.append(t)
        pts.append((x, y, z))
        tails.append(b"%b,%b,%b" % (xt, yt, zt))
        keep.append(i)
    idx = np.asarray(keep, np.int64)
    return (
        EventBatch(
            np.asarray(ts, np.float64),
            np.asarray(pts, np.float64).reshape(-1, 3),
            tails,
            base_off + ends[idx],
            first_line + idx,
        ),
        bad,
    )


def parse_block(
    fmt: str,
    block: bytes,
    base_off: int = 0,
    first_line: int = 1,
    *,
    source: str = "",
    max_abs: float | None = None,
) -> tuple[EventBatch, list[Malformed]]:
    """:func:`parse_csv_block` or :func:`parse_jsonl_block` by ``fmt``."""
    if fmt == "csv":
        return parse_csv_block(
            block, base_off, first_line, source=source, max_abs=max_abs
        )
    if fmt == "jsonl":
        return parse_jsonl_block(
            block, base_off, first_line, source=source, max_abs=max_abs
        )
    raise ValueError(f"unknown input format {fmt!r}")


def guess_format(name: str, head: bytes = b"") -> str:
    """``jsonl`` for ``.jsonl``/``.ndjson``/``.json``, ``csv`` for ``.csv``; otherwise
    ``jsonl`` when the first non-blank byte of ``head`` (the input's first bytes, if
    known) is ``{``, else ``csv``.

    Examples
    --------
    >>> guess_format("a.ndjson"), guess_format("a.txt"), guess_format("-", b' {"t"')
    ('jsonl', 'csv', 'jsonl')
    """
    low = name.lower()
    if low.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if low.endswith(".csv"):
        return "csv"
    return "jsonl" if head.lstrip().startswith(b"{") else "csv"


def read_batch(
    path: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    max_abs: float | None = None,
) -> EventBatch:
    """Every event of a file (``"-"``: stdin) in one batch, for one PCS.

    The same parser as the agent's; the first malformed line is an error here, not a
    skipped line, because a PCS over part of an input would silently mean something
    else.

    Raises
    ------
    InputError
        The file cannot be read, its header is not ``timestamp,x,y,z``, or a line is
        malformed (the message names the line and the reason).

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("wb", suffix=".csv", delete=False) as fh:
    ...     _ = fh.write(b"timestamp,x,y,z\\n1,0.10,2,3\\n")
    >>> read_batch(fh.name).tails
    [b'0.10,2,3']
    >>> os.unlink(fh.name)
    """
    name = os.fspath(path)
    where = "<stdin>" if name == "-" else name
    if name == "-":
        stream: BinaryIO = sys.stdin.buffer
    else:
        try:
            stream = open(name, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InputError(
                f"cannot read: {exc.strerror or exc}", source=name
            ) from None
    try:
        splitter = LineSplitter()
        parts: list[EventBatch] = []
        kind = fmt
        while True:
            try:
                data = stream.read(CHUNK)
            except OSError as exc:
                raise InputError(
                    f"cannot read: {exc.strerror or exc}", source=where
                ) from None
            if kind == "auto":
                kind = guess_format(name, data)
            block, off, line = splitter.feed(data, final=not data)
            batch, bad = parse_block(
                kind, block, off, line, source=where, max_abs=max_abs
            )
            bad = splitter.overlong + bad
            if bad:
                m = bad[0]
                text = m.text if len(m.text) <= 120 else m.text[:120] + "..."
                raise InputError(f"{m.reason}: {text!r}", source=where, position=m.line)
            if len(batch):
                parts.append(batch)
            if not data:
                return EventBatch.concat(parts)
    finally:
        if name != "-":
            stream.close()


class FileSource:
    """A regular file read from ``start`` in chunks; in follow mode EOF means "not yet".

    ``read()`` returns ``(chunk, at_eof)`` and never blocks for long, so follow mode is
    a poll: the caller sleeps on its own loop between empty reads.
    """

    seekable = True

    def __init__(self, path: str | os.PathLike[str], *, start: int = 0) -> None:
        self.path = os.fspath(path)
        try:
            self._f: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise InputError(exc.strerror or str(exc), source=self.path) from None
        size = os.fstat(self._f.fileno()).st_size
        if start > size:
            self._f.close()
            raise InputError(
                f"is {size} bytes, shorter than its checkpoint at byte {start} "
                "(truncated or replaced?); use --restart-input to start over",
                source=self.path,
            )
        self._f.seek(start)

    def head(self, n: int) -> bytes:
        return os.pread(self._f.fileno(), n, 0)

    def read(self, size: int = CHUNK) -> tuple[bytes, bool]:
        data = self._f.read(size)
        return data, len(data) < size

    def close(self) -> None:
        self._f.close()


class StdinSource:
    """Standard input (or any pipe/fd); reads only what is available right now."""

    seekable = False

    def __init__(self, fd: int | None = None) -> None:
        self.path = "<stdin>"
        self._fd = sys.stdin.fileno() if fd is None else fd
        self._eof = False

    def head(self, n: int) -> bytes:
        return b""

    def read(self, size: int = CHUNK, timeout: float = 0.05) -> tuple[bytes, bool]:
        """Whatever is available within ``timeout`` (b"" if nothing), and EOF."""
        if self._eof:
            return b"", True
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return b"", False
        data = os.read(self._fd, size)
        if not data:
            self._eof = True
        return data, self._eof

    def close(self) -> None:
        pass
