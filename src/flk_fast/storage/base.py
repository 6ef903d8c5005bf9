"""Storage contracts shared by every backend: the WAL and dedup Protocols and records.

Storage speaks bytes only (STYLE §4): the WAL stores opaque payloads, the dedup store
maps a key (a ``pcs_id``) to the exact bytes of the stored result. Nothing here imports
lmdb, redis or asyncpg, so the Protocols can be used in type hints for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_TTL_S",
    "DedupKey",
    "DedupStore",
    "OnCorrupt",
    "WalRecord",
    "WalStats",
    "WriteAheadLog",
    "dedup_key",
]

#: Default lifetime of a dedup entry: 14 days (SPEC §7 step 5).
DEFAULT_TTL_S: int = 14 * 86400

#: A dedup key: a ``pcs_id`` as text, or raw bytes. Text is UTF-8 encoded.
DedupKey = str | bytes

#: Called with ``(seq, reason)`` for every WAL record that fails its checksum.
OnCorrupt = Callable[[int, str], None]


def dedup_key(key: DedupKey) -> bytes:
    """Normalise a key to bytes so that ``"ab"`` and ``b"ab"`` name the same entry."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif not isinstance(key, bytes):
        raise TypeError(f"dedup key must be str or bytes, not {type(key).__name__}")
    if not key:
        raise ValueError("dedup key must not be empty")
    if len(key) > 480:  # LMDB's key limit is 511 bytes; keep every backend below it
        raise ValueError(f"dedup key is {len(key)} bytes; the limit is 480")
    return key


@dataclass(frozen=True, slots=True)
class WalRecord:
    """One WAL record; ``appended_at`` is the append's wall-clock time (epoch s)."""

    seq: int
    data: bytes
    acked: bool
    appended_at: float


@dataclass(frozen=True, slots=True)
class WalStats:
    """Size and count of a WAL.

    ``used_bytes`` is what LMDB's B-trees occupy (pages in use); ``disk_bytes`` is what
    the files occupy on disk (LMDB files never shrink, freed pages are reused).
    ``corrupt_seen`` counts the corrupt records this handle has reported so far.
    """

    count: int
    pending: int
    acked: int
    used_bytes: int
    disk_bytes: int
    first_seq: int | None
    last_seq: int | None
    segments: int
    corrupt_seen: int


class WriteAheadLog(Protocol):
    """A durable, append-only log of opaque records (see ``wal_lmdb.LmdbWal``)."""

    def append(self, data: bytes, meta: Mapping[bytes, bytes] | None = None) -> int: ...

    def append_many(
        self, items: Sequence[bytes], meta: Mapping[bytes, bytes] | None = None
    ) -> list[int]: ...

    def get(self, seq: int) -> WalRecord | None: ...

    def get_meta(self, key: bytes) -> bytes | None: ...

    def replay(
        self, start: int = 0, include_acked: bool = False
    ) -> Iterator[WalRecord]: ...

    def ack(self, seq: int) -> None: ...

    def ack_many(self, seqs: Sequence[int]) -> None: ...

    def pending(self, start: int = 0) -> Iterator[WalRecord]: ...

    def compact(self, older_than_s: float) -> int: ...

    def stats(self) -> WalStats: ...

    def close(self) -> None: ...


@runtime_checkable
class DedupStore(Protocol):
    """First-write-wins result store keyed by ``pcs_id``; every method is async.

    ``put_if_absent`` returns ``(winner, inserted)``: the stored bytes (ours if
    ``inserted``) — atomically, across processes and, for Redis/PostgreSQL, hosts.
    Any backend failure or timeout raises ``flk_fast.errors.DedupUnavailableError``.
    """

    async def get(self, key: DedupKey) -> bytes | None: ...

    async def put_if_absent(
        self, key: DedupKey, value: bytes, ttl_s: float = DEFAULT_TTL_S
    ) -> tuple[bytes, bool]: ...

    async def get_many(self, keys: Sequence[DedupKey]) -> list[bytes | None]: ...

    async def put_many_if_absent(
        self, items: Sequence[tuple[DedupKey, bytes]], ttl_s: float = DEFAULT_TTL_S
    ) -> list[tuple[bytes, bool]]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
