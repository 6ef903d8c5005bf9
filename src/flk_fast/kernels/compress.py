"""Compressibility r of SPEC §4.4: zlib level 6 over the joined canonical rows."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from ._validate import byte_pieces

__all__ = ["compressibility"]

# Rows are gathered into blocks of about this size before each deflate call: per-call
# overhead dominates for short rows, and CPython's zlib releases the GIL per call.
_BLOCK = 1 << 18


def compressibility(rows: bytes | bytearray | memoryview | Iterable[bytes]) -> float:
    """``len(zlib.compress(raw, 6)) / len(raw)`` clamped to [0, 1], rounded to 9 places.

    ``raw`` is ``rows`` itself when bytes-like, else the rows joined by ``b"\\n"`` (no
    trailing newline), compressed as a stream so the rows are never all in memory.
    Deflate output does not depend on how its input is split, so the stream gives the
    same length as one ``zlib.compress`` call. Empty input gives 1.0.

    Raises
    ------
    KernelTypeError
        ``rows`` is text (``str``), not iterable, or holds a row that is not
        bytes-like: encode text first (``"abc".encode()``).

    Examples
    --------
    >>> compressibility(b"")
    1.0
    >>> rows = [b"a" * 100, b"b" * 100]
    >>> compressibility(rows) == compressibility(b"\\n".join(rows))
    True
    >>> compressibility("abc")
    Traceback (most recent call last):
      ...
    flk_fast.errors.KernelTypeError: compressibility takes bytes ... not str; ...
    """
    if isinstance(rows, bytes | bytearray | memoryview):
        raw = memoryview(rows).cast("B")
        if len(raw) == 0:
            return 1.0
        return round(min(1.0, max(0.0, len(zlib.compress(raw, 6)) / len(raw))), 9)
    it = byte_pieces(
        rows, "compressibility", "rows", "encode the text first, e.g. rows.encode()"
    )
    comp = zlib.compressobj(6)
    total = packed = 0
    block: list[bytes] = []
    size = 0
    first = True
    for row in it:
        if not first:
            block.append(b"\n")
            size += 1
        first = False
        block.append(bytes(row))
        size += len(row)
        if size >= _BLOCK:
            data = b"".join(block)
            total += len(data)
            packed += len(comp.compress(data))
            block, size = [], 0
    if block:
        data = b"".join(block)
        total += len(data)
        packed += len(comp.compress(data))
    packed += len(comp.flush())
    if total == 0:
        return 1.0
    return round(min(1.0, max(0.0, packed / total)), 9)
