"""Server configuration: CLI flags > ``FLK_*`` environment > TOML file > defaults.

Every option is declared once in :data:`OPTIONS`; the CLI (``cli/serve.py``), the
environment reader, the TOML reader and the table in ``docs/server.md`` all derive from
it (a test checks that the docs table names every option). Precedence, parsing and the
TOML reader are the shared ones of :mod:`flk_fast.config` (the agent uses them too).

Secrets (the metrics password, the audit DSN) are accepted from the environment or the
TOML file only, never as a flag, because flags are visible to every user through ``ps``.
``repr`` of a :class:`ServerConfig` masks them, so logging a config never leaks one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flk_fast import config
from flk_fast.errors import ConfigError
from flk_fast.storage import redact

__all__ = [
    "OPTIONS",
    "Option",
    "ServerConfig",
    "check_dedup_url",
    "load_config",
    "redact",
]


@dataclass(frozen=True)
class Option(config.Option):
    """A server option; its environment variable is ``FLK_<NAME>``."""

    @property
    def env(self) -> str:
        return SCHEMA_PREFIX + self.name.upper()


SCHEMA_PREFIX = "FLK_"


OPTIONS: tuple[Option, ...] = (
    Option(
        "config",
        str,
        "",
        "TOML file with any of these options (top level or a [serve] table)",
    ),
    Option("host", str, "127.0.0.1", "address to bind"),
    Option(
        "port", int, 8080, "TCP port (0 picks a free one; the ready line says which)"
    ),
    Option(
        "data_dir",
        str,
        "./flk-data",
        "data directory: the ledger (DATA_DIR/ledger: inbox, outcomes and audit "
        "spool in one LMDB environment), or with --dedup the inbox WAL",
    ),
    Option(
        "dedup",
        str,
        "",
        "dedup store URL: lmdb:///path, memory://, redis://..., "
        "redis+cluster://h1:p1,h2:p2, redis+sentinel://h1:p1/service, "
        "postgresql://... (default: none, the ledger in DATA_DIR/ledger commits "
        "each request's inbox record and outcome together; an lmdb:// URL keeps "
        "a separate store and inbox WAL, two commits per request)",
    ),
    Option(
        "dedup_read_dsn",
        str,
        "",
        "postgresql://... of a streaming read replica of the PostgreSQL dedup store: "
        "hits may come from it; misses, lag and failures fall back to the primary",
        secret=True,
    ),
    Option(
        "unsafe_memory_dedup",
        bool,
        False,
        "allow --dedup memory:// (verdicts only in RAM: a crash loses them while "
        "their WAL records are already acked; never with --workers > 1)",
    ),
    Option(
        "sign_alg",
        str,
        "hmac",
        "signature algorithm of the default key",
        choices=("hmac", "ed25519", "none"),
    ),
    Option(
        "hmac_key_file",
        str,
        "",
        "file holding the HMAC key (else env FLK_HMAC_KEY holds the key itself)",
    ),
    Option("ed25519_public_key_file", str, "", "PEM or raw 32-byte Ed25519 public key"),
    Option(
        "refuse_sig_v01",
        bool,
        False,
        'answer 401 to PCS of version "0.1", whose signature leaves scales, N_j '
        "and regime unsigned (SPEC §3.1); off: both versions are checked",
    ),
    Option(
        "tenants_dir",
        str,
        "",
        "multi-tenant keys: DIR/<tenant>.hmac (HMAC key) or "
        "DIR/<tenant>.pub (Ed25519 public key), chosen by X-Tenant-Id; reloaded on "
        "SIGHUP",
    ),
    Option(
        "ignore_tenant_header",
        bool,
        False,
        "single-tenant server: take every request as the default tenant whatever "
        "its X-Tenant-Id says (for SDKs that always send one); not with --tenants-dir",
    ),
    Option("workers", int, 1, "worker processes sharing the port (SO_REUSEPORT)"),
    Option("tls_cert", str, "", "TLS certificate chain (PEM); enables HTTPS"),
    Option("tls_key", str, "", "TLS private key (PEM)"),
    Option(
        "tls_client_ca",
        str,
        "",
        "CA bundle; when set, clients must present a certificate it signed (mTLS)",
    ),
    Option("max_body", int, 1 << 20, "largest accepted body in bytes (413 above)"),
    Option(
        "body_timeout_s",
        float,
        30.0,
        "seconds a client may take to upload a request body (408 after)",
    ),
    Option(
        "keepalive_timeout_s",
        float,
        75.0,
        "seconds an idle keep-alive connection stays open; keep it above the idle "
        "timeout of the load balancer in front (often 60 s), so that it closes first. "
        "Also bounds a client that never completes its request headers",
    ),
    Option(
        "max_inflight_bodies",
        int,
        256,
        "request bodies being uploaded at once, per worker (503 + Retry-After beyond)",
    ),
    Option(
        "rate_limit", float, 0.0, "global token bucket, requests per second (0 = off)"
    ),
    Option("rate_burst", int, 0, "global bucket size (0 = one second of rate_limit)"),
    Option(
        "tenant_rate_limit",
        float,
        0.0,
        "per-tenant token bucket, requests per second (0 = off)",
    ),
    Option("tenant_rate_burst", int, 0, "per-tenant bucket size (0 = one second)"),
    Option("dedup_ttl_s", int, 14 * 24 * 3600, "lifetime of a stored outcome"),
    Option(
        "audit_dsn",
        str,
        "",
        "PostgreSQL DSN of the hash-chained audit log (off when empty); entries spool "
        "in DATA_DIR/audit-spool/w<i> and ship in the background",
        cli=False,
        secret=True,
    ),
    Option("wal_sync", bool, True, "fsync the inbox WAL (off only for experiments)"),
    Option("retry_after_s", int, 1, "Retry-After seconds on 503"),
    Option(
        "drain_timeout_s", float, 10.0, "SIGTERM: seconds to drain in-flight requests"
    ),
    Option("metrics_user", str, "", "Basic Auth user for /metrics (off when empty)"),
    Option(
        "metrics_password",
        str,
        "",
        "Basic Auth password for /metrics",
        cli=False,
        secret=True,
    ),
    Option("access_log", bool, False, "one JSON log line per request"),
    Option(
        "log_level",
        str,
        "info",
        "log level",
        choices=("debug", "info", "warning", "error"),
    ),
)
_BY_NAME = {o.name: o for o in OPTIONS}
SCHEMA = config.Schema(OPTIONS, SCHEMA_PREFIX, "serve")


@dataclass(frozen=True)
class ServerConfig:
    """Resolved configuration of ``flk serve``. Field names are the option names."""

    config: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./flk-data"
    dedup: str = ""
    dedup_read_dsn: str = dataclasses.field(default="", repr=False)
    unsafe_memory_dedup: bool = False
    sign_alg: str = "hmac"
    hmac_key_file: str = ""
    ed25519_public_key_file: str = ""
    refuse_sig_v01: bool = False
    tenants_dir: str = ""
    ignore_tenant_header: bool = False
    workers: int = 1
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    max_body: int = 1 << 20
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_inflight_bodies: int = 256
    rate_limit: float = 0.0
    rate_burst: int = 0
    tenant_rate_limit: float = 0.0
    tenant_rate_burst: int = 0
    dedup_ttl_s: int = 14 * 24 * 3600
    audit_dsn: str = dataclasses.field(default="", repr=False)
    wal_sync: bool = True
    retry_after_s: int = 1
    drain_timeout_s: float = 10.0
    metrics_user: str = ""
    metrics_password: str = dataclasses.field(default="", repr=False)
    access_log: bool = False
    log_level: str = "info"

    def __post_init__(self) -> None:
        for opt in OPTIONS:
            value = getattr(self, opt.name)
            if opt.choices and value not in opt.choices:
                raise ConfigError(
                    f"{opt.flag}: {value!r} is not one of {', '.join(opt.choices)}"
                )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: {self.port} is not a TCP port")
        if self.workers < 1:
            raise ConfigError("--workers: must be >= 1")
        if self.ignore_tenant_header and self.tenants_dir:
            raise ConfigError(
                "--ignore-tenant-header is for a single-tenant server: not with "
                "--tenants-dir, whose tenants are chosen by X-Tenant-Id"
            )
        if self.max_body < 1:
            raise ConfigError("--max-body: must be >= 1")
        if not (math.isfinite(self.body_timeout_s) and self.body_timeout_s > 0):
            raise ConfigError("--body-timeout-s: must be a number > 0")
        if not (
            math.isfinite(self.keepalive_timeout_s) and self.keepalive_timeout_s > 0
        ):
            raise ConfigError("--keepalive-timeout-s: must be a number > 0")
        if self.max_inflight_bodies < 1:
            raise ConfigError("--max-inflight-bodies: must be >= 1")
        for name in ("rate_limit", "tenant_rate_limit"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{_BY_NAME[name].flag}: must be a number >= 0")
        for name in ("rate_burst", "tenant_rate_burst", "retry_after_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_BY_NAME[name].flag}: must be >= 0")
        if not (math.isfinite(self.drain_timeout_s) and self.drain_timeout_s >= 0):
            raise ConfigError("--drain-timeout-s: must be a finite number >= 0")
        if not self.host.strip():
            raise ConfigError("--host: must not be empty")
        if self.metrics_password and not self.metrics_user:
            raise ConfigError("FLK_METRICS_PASSWORD needs --metrics-user")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("--tls-client-ca needs --tls-cert/--tls-key")
        if self.metrics_user and not self.metrics_password:
            raise ConfigError("--metrics-user needs FLK_METRICS_PASSWORD")
        if self.dedup_ttl_s < 1:
            raise ConfigError("--dedup-ttl-s: must be >= 1")
        if self.dedup_read_dsn and not self.dedup.lower().startswith("postgres"):
            raise ConfigError(
                "--dedup-read-dsn needs a PostgreSQL --dedup (postgresql://...)"
            )
        if self.dedup.strip().lower().startswith("memory:"):
            # The server acks (and compacts) a WAL record once its verdict is stored;
            # with a store in RAM a kill -9 then loses the verdict for good, and a
            # later different body under the same pcs_id would win.
            if self.workers > 1:
                raise ConfigError(
                    "--dedup memory:// is one process's RAM: not with --workers > 1"
                )
            if not self.unsafe_memory_dedup:
                raise ConfigError(
                    "--dedup memory:// loses verdicts on a crash; "
                    "pass --unsafe-memory-dedup to use it anyway"
                )

    @property
    def dedup_url(self) -> str:
        """The dedup URL, defaulting to an LMDB store inside the data directory."""
        if self.dedup:
            return self.dedup
        return "lmdb://" + os.path.join(os.path.abspath(self.data_dir), "dedup")

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """The options safe to log: secrets shown only as set / not set."""
        out: dict[str, Any] = {}
        for opt in OPTIONS:
            value = getattr(self, opt.name)
            out[opt.name] = ("<set>" if value else "") if opt.secret else value
        out["dedup"] = (
            redact(self.dedup, self.dedup) if self.dedup else "ledger (DATA_DIR/ledger)"
        )
        return out


def check_dedup_url(url: str) -> None:
    """Reject a dedup URL that ``open_dedup`` would refuse, without opening a store.

    Network URLs go through ``open_dedup`` itself (its stores connect lazily, so
    nothing is contacted) and are closed again; ``lmdb://`` and ``memory://`` are
    checked here, because opening an LMDB environment twice in one process is not
    allowed and the server opens it later.

    Raises
    ------
    ConfigError
        Unknown scheme, ``lmdb://`` without a path, a bad port or option.
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        path = parts.netloc + parts.path
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        msg = f"--dedup: {url!r} is not a URL: {exc}"
        raise ConfigError(redact(msg, url)) from None
    if scheme == "lmdb":
        if not path:
            raise ConfigError(
                redact(f"--dedup: {url!r}: lmdb needs a path, e.g. lmdb:///path", url)
            )
        return
    if scheme == "memory":
        return
    import asyncio

    from flk_fast.storage import open_dedup

    try:
        store = open_dedup(url)
    except ConfigError as exc:
        raise ConfigError(f"--dedup: {redact(exc, url)}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(redact(f"--dedup: {url!r}: {exc}", url)) from None
    close = getattr(store, "close", None)
    if close is not None:
        try:
            res = close()
            if asyncio.iscoroutine(res):
                asyncio.run(res)
        except Exception:  # noqa: BLE001 - nothing was connected; best effort
            pass


def load_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Resolve the configuration. ``cli`` maps option names to values, ``None`` meaning
    "flag not given"; ``env`` defaults to ``os.environ``.

    Raises
    ------
    ConfigError
        A value is malformed or inconsistent; the message names the option.
    """
    env = os.environ if env is None else env
    return ServerConfig(**SCHEMA.resolve(cli or {}, env))
