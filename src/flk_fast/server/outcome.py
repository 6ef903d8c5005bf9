"""The stored outcome of a judged PCS: the dedup value (SPEC §7 steps 4-5).

Layout (version 1)::

    b"\\x00F1" | status (3 ASCII digits) | content digest (32) | crc32 (4, big endian)
               | origin length (1) | origin | answer body

The content digest is SHA-256 of the PCS's full payload (SPEC §3.1), so a twin whose
judged content differs can be told apart from a resend (§3.2, 409). The origin names
the inserter: ``server id / inbox WAL / sequence`` of the request that stored it. A
replay after a crash that finds its own origin knows the insert was its own and that
the steps after it (the audit entry, the counters) may not have happened; a replay
that finds another origin knows some other request owns them. The CRC covers
everything after itself and the status and digest, like the WAL's records: flipped
bytes in a store are found and never served (503 instead), where a bare
``b"200" + body`` value answered 200 with garbled JSON. A CRC rather than a hash: it
guards against damage, not an attacker, who could rewrite a value together with its
hash anyway.

Values written before this layout (``b"200"`` or ``b"202"`` followed by the body) are
still read, without a digest (a twin of such a value is taken as a duplicate) and
without a checksum; the leading NUL of the magic keeps the two apart.
"""

from __future__ import annotations

import os
import secrets
import zlib
from pathlib import Path
from typing import NamedTuple

from flk_fast.errors import ConfigError, StorageError

__all__ = [
    "DamagedOutcomeError",
    "Outcome",
    "decode_outcome",
    "encode_outcome",
    "server_id",
]

_MAGIC = b"\x00F1"
_DIGEST_LEN = 32
_HEADER = len(_MAGIC) + 3 + _DIGEST_LEN + 4
_MAX_ORIGIN = 255
_STATUS = {200: b"200", 202: b"202"}
_LEGACY = (b"200", b"202")


class DamagedOutcomeError(StorageError):
    """A stored outcome failed its checksum or layout: never served (HTTP 503)."""


class Outcome(NamedTuple):
    status: int
    #: SHA-256 of the stored PCS's full payload; None for a value of the old layout.
    digest: bytes | None
    body: bytes
    #: Who stored it (``server id/WAL/seq``); b"" for a value of the old layout.
    origin: bytes = b""


def encode_outcome(status: int, digest: bytes, body: bytes, origin: bytes) -> bytes:
    """The dedup value of a verdict answered ``status`` (200 or 202) with ``body``,
    stored by the request named ``origin``."""
    code = _STATUS[status]
    if len(digest) != _DIGEST_LEN:
        raise ValueError(f"digest must be {_DIGEST_LEN} bytes, got {len(digest)}")
    if len(origin) > _MAX_ORIGIN:
        raise ValueError(f"origin must be at most {_MAX_ORIGIN} bytes")
    tail = bytes((len(origin),)) + origin + body
    crc = zlib.crc32(tail, zlib.crc32(digest, zlib.crc32(code)))
    return b"".join((_MAGIC, code, digest, crc.to_bytes(4, "big"), tail))


def decode_outcome(stored: bytes) -> Outcome:
    """Parse a dedup value; raises ``DamagedOutcomeError`` for anything else."""
    if stored[:3] in _LEGACY:
        return Outcome(int(stored[:3]), None, stored[3:])
    if len(stored) <= _HEADER or stored[:3] != _MAGIC:
        raise DamagedOutcomeError(
            f"stored outcome is damaged: unknown layout ({len(stored)} bytes, "
            f"starts {stored[:3]!r})"
        )
    code = stored[3:6]
    digest = stored[6 : 6 + _DIGEST_LEN]
    tail = memoryview(stored)[_HEADER:]
    crc = int.from_bytes(stored[_HEADER - 4 : _HEADER], "big")
    if crc != zlib.crc32(tail, zlib.crc32(digest, zlib.crc32(code))):
        raise DamagedOutcomeError("stored outcome is damaged: checksum mismatch")
    n = tail[0]
    if code not in _LEGACY or len(tail) < 1 + n:
        raise DamagedOutcomeError(f"stored outcome is damaged: status {code!r}")
    return Outcome(int(code), digest, bytes(tail[1 + n :]), bytes(tail[1 : 1 + n]))


def server_id(data_dir: str | os.PathLike[str]) -> str:
    """The id of a data directory, the first part of every origin it stores.

    Random, made once and kept in ``DATA_DIR/server-id``: replicas sharing a network
    dedup store each have their own data dir, so their origins never collide. Written
    to a temporary file, fsynced and hard-linked into place, so racing workers agree on
    one id and a crash never leaves a half-written one.
    """
    path = Path(data_dir) / "server-id"
    try:
        text = _read_id(path)
    except FileNotFoundError:
        text = ""
    if text:
        return text
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".server-id.{os.getpid()}")
    tmp.write_text(secrets.token_hex(8) + "\n", "ascii")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # fails if another worker linked first: keep its id
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return _read_id(path)


def _read_id(path: Path) -> str:
    raw = path.read_bytes().strip()
    if raw and (len(raw) > 64 or not raw.isalnum() or not raw.isascii()):
        raise ConfigError(
            f"{path} is damaged (not a server id); delete it and a new one is made "
            "(a crash replay then no longer recognises outcomes stored under the old "
            "id as its own)"
        )
    return raw.decode("ascii")
