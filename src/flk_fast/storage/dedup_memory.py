"""In-process dedup store for tests and development, with an optional snapshot file.

All state lives in one dict touched only from the event loop, and no method awaits
between its check and its insert, so ``put_if_absent`` is atomic within the process.
It is NOT shared between processes: several server processes each see their own.

With ``snapshot`` set, the live entries are loaded at open and written back by
``close()`` and ``save()`` (atomically: temp file, fsync, rename). Entries written
after the last save are lost on a crash; use ``lmdb://`` when that matters.
Snapshot format: ``b"FLKDEDUP1\\n"`` then, per entry,
``expires_at:f64 key_len:u32 value_len:u32 key value`` (big-endian).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flk_fast.errors import StorageError

from .base import DEFAULT_TTL_S, DedupKey, dedup_key

__all__ = ["MemoryDedup"]

_MAGIC = b"FLKDEDUP1\n"
_ENTRY = struct.Struct(">dII")


class MemoryDedup:
    """``DedupStore`` in a dict (``memory://`` or ``memory:///path/to/snapshot``).

    Examples
    --------
    >>> import asyncio
    >>> async def demo():
    ...     d = MemoryDedup()
    ...     first = await d.put_if_absent("id", b"one")
    ...     second = await d.put_if_absent("id", b"two")
    ...     return first, second, await d.get("id")
    >>> asyncio.run(demo())
    ((b'one', True), (b'one', False), b'one')
    """

    def __init__(
        self,
        snapshot: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._data: dict[bytes, tuple[float, bytes]] = {}
        self._clock = clock
        self._closed = False
        self.snapshot = Path(snapshot) if snapshot else None
        if self.snapshot is not None and self.snapshot.exists():
            self._load(self.snapshot)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("memory dedup store is closed")

    def _live(self, key: bytes, now: float) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._data[key]
            return None
        return entry[1]

    def _put(
        self, key: DedupKey, value: bytes, ttl_s: float, now: float
    ) -> tuple[bytes, bool]:
        k = dedup_key(key)
        if not isinstance(value, bytes):
            raise TypeError(f"dedup values are bytes, not {type(value).__name__}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        live = self._live(k, now)
        if live is not None:
            return live, False
        self._data[k] = (now + ttl_s, value)
        return value, True

    async def get(self, key: DedupKey) -> bytes | None:
        self._check_open()
        return self._live(dedup_key(key), self._clock())

    async def get_many(self, keys: Sequence[DedupKey]) -> list[bytes | None]:
        self._check_open()
        now = self._clock()
        return [self._live(dedup_key(k), now) for k in keys]

    async def put_if_absent(
        self, key: DedupKey, value: bytes, ttl_s: float = DEFAULT_TTL_S
    ) -> tuple[bytes, bool]:
        self._check_open()
        return self._put(key, value, ttl_s, self._clock())

    async def put_many_if_absent(
        self, items: Sequence[tuple[DedupKey, bytes]], ttl_s: float = DEFAULT_TTL_S
    ) -> list[tuple[bytes, bool]]:
        self._check_open()
        now = self._clock()
        return [self._put(k, v, ttl_s, now) for k, v in items]

    async def sweep(self, limit: int = 100_000) -> int:
        """Drop up to ``limit`` expired entries; return how many."""
        now = self._clock()
        dead = [k for k, (exp, _) in self._data.items() if exp <= now][:limit]
        for k in dead:
            del self._data[k]
        return len(dead)

    async def ping(self) -> None:
        self._check_open()

    def save(self) -> None:
        """Write the live entries to the snapshot file (no-op without one)."""
        if self.snapshot is None:
            return
        now = self._clock()
        tmp = self.snapshot.with_name(self.snapshot.name + ".tmp")
        self.snapshot.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC)
            for key, (exp, value) in self._data.items():
                if exp > now:
                    fh.write(_ENTRY.pack(exp, len(key), len(value)))
                    fh.write(key)
                    fh.write(value)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.snapshot)
        # the rename itself is durable only once the directory is synced
        fd = os.open(self.snapshot.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _load(self, path: Path) -> None:
        raw = path.read_bytes()
        if not raw.startswith(_MAGIC):
            raise StorageError(f"{path}: not a flk_fast memory dedup snapshot")
        pos, now = len(_MAGIC), self._clock()
        while pos < len(raw):
            if pos + _ENTRY.size > len(raw):
                raise StorageError(f"{path}: truncated snapshot at byte {pos}")
            exp, klen, vlen = _ENTRY.unpack_from(raw, pos)
            pos += _ENTRY.size
            if pos + klen + vlen > len(raw):
                raise StorageError(f"{path}: truncated snapshot at byte {pos}")
            key, value = raw[pos : pos + klen], raw[pos + klen : pos + klen + vlen]
            pos += klen + vlen
            if exp > now:
                self._data[key] = (exp, value)

    async def close(self) -> None:
        if not self._closed:
            self.save()
            self._closed = True

    async def __aenter__(self) -> MemoryDedup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
