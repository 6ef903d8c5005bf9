"""The exception hierarchy: every error flk_fast raises on purpose derives from
FlkError."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DedupUnavailableError",
    "FlkError",
    "InputError",
    "KernelInputError",
    "KernelTypeError",
    "KeyLoadError",
    "LmdbDamagedError",
    "PCSValidationError",
    "SignatureError",
    "StorageError",
    "WalCorruptionError",
]


class FlkError(Exception):
    """Base class of every flk_fast error."""


class PCSValidationError(FlkError, ValueError):
    """A body breaks the shape of SPEC §1 (HTTP 400); ``field`` names the culprit."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}" if field else rule)


class SignatureError(FlkError):
    """The signature is missing, does not decode, has the wrong length or does not match
    (HTTP 401)."""


class KeyLoadError(FlkError):
    """A signing or verification key could not be loaded (file, env var or bytes)."""


class InputError(FlkError, ValueError):
    """Event input (CSV / JSONL) is malformed; ``position`` is the 1-based line."""

    def __init__(self, message: str, *, source: str = "", position: int = 0) -> None:
        self.source = source
        self.position = position
        where = (
            f"{source}:{position}: " if position else (f"{source}: " if source else "")
        )
        super().__init__(f"{where}{message}")


class KernelInputError(FlkError, ValueError):
    """A kernel of :mod:`flk_fast.kernels` refuses its input (non-finite values,
    non-integer counts, bad shapes, mismatched Merkle schemes); the message names the
    argument, the offending item and what is accepted."""


class KernelTypeError(KernelInputError, TypeError):
    """A kernel got a value of the wrong type (``str`` where bytes are needed)."""


class ConfigError(FlkError, ValueError):
    """A configuration value is invalid; the message names the option."""


class StorageError(FlkError):
    """Base class of storage failures."""


class DedupUnavailableError(StorageError):
    """The dedup store did not answer in time or is down. Retryable (HTTP 503)."""


class LmdbDamagedError(StorageError):
    """An LMDB file's own structures are damaged (truncated, bad pages); ``file`` is
    the ``data.mdb`` and the message says what to do."""

    def __init__(self, file: object, detail: str, fix: str = "") -> None:
        self.file = file
        self.detail = detail
        super().__init__(f"{file} is damaged: {detail}" + (f"; {fix}" if fix else ""))


class WalCorruptionError(StorageError):
    """A WAL record failed its checksum; ``seq`` is its position."""

    def __init__(self, seq: int, message: str) -> None:
        self.seq = seq
        super().__init__(f"WAL record {seq}: {message}")
