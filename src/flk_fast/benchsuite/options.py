"""The names and parsers of ``flk bench``'s options, light enough to import when
``flk --help`` builds its parsers: the load options (one table for the flags and the
SLO file's ``[load]`` keys), durations and the reported percentiles."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flk_fast.errors import ConfigError

__all__ = ["LOAD_OPTIONS", "PERCENTILES", "LoadOption", "parse_duration"]

#: Reported percentiles: report key -> percentile.
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9, "max": 100.0}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*")


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Seconds of ``'30s'``, ``'500ms'``, ``'2m'``, ``'1h'`` or a bare number (s).

    Examples
    --------
    >>> parse_duration("1.5s"), parse_duration("250ms"), parse_duration(2)
    (1.5, 0.25, 2.0)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _DURATION.fullmatch(str(text))
        if m is None:
            raise ConfigError(
                f"{what}: {text!r} is not a duration; write e.g. 30s, 500ms, 2m"
            )
        value = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what}: must be > 0, got {text!r}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be in [0, 1), got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {text}")
    return value


@dataclass(frozen=True, slots=True)
class LoadOption:
    """One load option: ``--name-with-dashes`` on the command line, ``name`` in the
    SLO file's ``[load]`` table."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = "V"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


LOAD_OPTIONS = (
    LoadOption("connections", _count, 64, "keep-alive connections at most (64)", "N"),
    LoadOption(
        "timeout",
        lambda t: parse_duration(t, "--timeout"),
        10.0,
        "time allowed per request, from its intended send time (10s)",
        "T",
    ),
    LoadOption(
        "max_lag",
        lambda t: parse_duration(t, "--max-lag"),
        0.010,
        "p99 start lag beyond which the run is invalid (10ms)",
        "T",
    ),
    LoadOption(
        "hmac_key_file", str, None, "HMAC-SHA256 secret file that signs each PCS", "F"
    ),
    LoadOption("hmac_key_env", str, None, "env var holding the HMAC secret", "VAR"),
    LoadOption(
        "ed25519_key_file", str, None, "Ed25519 private key instead of HMAC", "F"
    ),
    LoadOption("tenant", str, None, "send X-Tenant-Id: T", "T"),
    LoadOption(
        "resend_ratio",
        _ratio,
        0.0,
        "share of requests that resend an earlier body, i.e. dedup hits (0)",
        "R",
    ),
    LoadOption("shard_id", str, "flk-bench", "shard_id of the PCS (flk-bench)", "S"),
    LoadOption("sig_version", str, "0.2", "PCS version signed: 0.2 or 0.1 (0.2)"),
    LoadOption(
        "tls_ca_file", str, None, "PEM CA bundle for https (default: system)", "F"
    ),
    LoadOption("tls_cert", str, None, "client certificate (PEM) for mTLS", "F"),
    LoadOption("tls_key", str, None, "unencrypted key (PEM) of --tls-cert", "F"),
)
