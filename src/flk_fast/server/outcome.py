"""The stored outcome of a judged PCS: the dedup value (SPEC §7 steps 4-5).

Layout (version 1)::

    b"\\x00F1" | status (3 ASCII digits) | content digest (32) | crc32 (4, big endian)
               | answer body

The content digest is SHA-256 of the PCS's full payload (SPEC §3.1), so a twin whose
judged content differs can be told apart from a resend (§3.2, 409). The CRC covers
status, digest and body, like the WAL's records: flipped bytes in a store are found
and never served (503 instead), where a bare ``b"200" + body`` value answered 200 with
garbled JSON. A CRC rather than a hash: it guards against damage, not an attacker, who
could rewrite a value together with its hash anyway.

Values written before this layout (``b"200"`` or ``b"202"`` followed by the body) are
still read, without a digest (a twin of such a value is taken as a duplicate) and
without a checksum; the leading NUL of the magic keeps the two apart.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

from flk_fast.errors import StorageError

__all__ = ["DamagedOutcomeError", "Outcome", "decode_outcome", "encode_outcome"]

_MAGIC = b"\x00F1"
_DIGEST_LEN = 32
_HEADER = len(_MAGIC) + 3 + _DIGEST_LEN + 4
_STATUS = {200: b"200", 202: b"202"}
_LEGACY = (b"200", b"202")


class DamagedOutcomeError(StorageError):
    """A stored outcome failed its checksum or layout: never served (HTTP 503)."""


class Outcome(NamedTuple):
    status: int
    #: SHA-256 of the stored PCS's full payload; None for a value of the old layout.
    digest: bytes | None
    body: bytes


def encode_outcome(status: int, digest: bytes, body: bytes) -> bytes:
    """The dedup value of a verdict answered ``status`` (200 or 202) with ``body``."""
    code = _STATUS[status]
    if len(digest) != _DIGEST_LEN:
        raise ValueError(f"digest must be {_DIGEST_LEN} bytes, got {len(digest)}")
    crc = zlib.crc32(body, zlib.crc32(digest, zlib.crc32(code)))
    return b"".join((_MAGIC, code, digest, crc.to_bytes(4, "big"), body))


def decode_outcome(stored: bytes) -> Outcome:
    """Parse a dedup value; raises ``DamagedOutcomeError`` for anything else."""
    if stored[:3] in _LEGACY:
        return Outcome(int(stored[:3]), None, stored[3:])
    if len(stored) < _HEADER or stored[:3] != _MAGIC:
        raise DamagedOutcomeError(
            f"stored outcome is damaged: unknown layout ({len(stored)} bytes, "
            f"starts {stored[:3]!r})"
        )
    code = stored[3:6]
    digest = stored[6 : 6 + _DIGEST_LEN]
    body = stored[_HEADER:]
    crc = int.from_bytes(stored[_HEADER - 4 : _HEADER], "big")
    if crc != zlib.crc32(body, zlib.crc32(digest, zlib.crc32(code))):
        raise DamagedOutcomeError("stored outcome is damaged: checksum mismatch")
    if code not in _LEGACY:
        raise DamagedOutcomeError(f"stored outcome is damaged: status {code!r}")
    return Outcome(int(code), digest, body)
