"""Verification keys of the server: a default keyring and, optionally, one per tenant.

Tenant keys live in a directory, one file per key: ``<tenant>.hmac`` (the HMAC secret)
or ``<tenant>.pub`` (an Ed25519 public key, PEM or 32 raw bytes). A second key for the
same tenant, ``<tenant>.<key-id>.hmac``, keeps both live during a rotation.
:meth:`KeyStore.reload` builds a whole new table and swaps it in one assignment, so a
request never sees half a reload, and a failed reload keeps the old keys (SIGHUP must
not take the service down).

Key material never leaves this module except as
:class:`~flk_fast.protocol.signing.Keyring` objects; nothing here logs a secret, only
tenant names and key ids.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from flk_fast.errors import ConfigError, KeyLoadError
from flk_fast.protocol.signing import (
    Ed25519Key,
    HmacKey,
    Keyring,
    VerificationKey,
    load_ed25519_public,
    load_hmac_key,
)

from .config import ServerConfig

__all__ = ["HMAC_KEY_ENV", "KeyStore", "TENANT_RE", "UnknownTenantError"]

#: Environment variable holding the default HMAC key itself (when no key file is given).
HMAC_KEY_ENV = "FLK_HMAC_KEY"
#: What an ``X-Tenant-Id`` may look like; anything else is an unknown tenant.
TENANT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_FILE_RE = re.compile(
    r"([A-Za-z0-9_-]{1,64})(?:\.([A-Za-z0-9_-]{1,64}))?\.(hmac|pub)"
)


class UnknownTenantError(LookupError):
    """The ``X-Tenant-Id`` names no configured tenant (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class _Table:
    default: Keyring | None
    tenants: dict[str, Keyring]


class KeyStore:
    """Resolve the keyring for a request's tenant.

    ``sign_alg = "none"`` turns signature checks off: :meth:`keyring_for` returns None.
    """

    def __init__(self, cfg: ServerConfig) -> None:
        self._cfg = cfg
        self.verify_signatures = cfg.sign_alg != "none"
        self._table = self._load()

    @property
    def multi_tenant(self) -> bool:
        return bool(self._cfg.tenants_dir)

    @property
    def ignore_tenant_header(self) -> bool:
        """``--ignore-tenant-header``: every request is the default tenant ``""``."""
        return self._cfg.ignore_tenant_header

    def tenant_of(self, header: str) -> str:
        """The tenant a request's ``X-Tenant-Id`` value names (``""``: the default
        tenant); with ``--ignore-tenant-header`` always ``""``, whatever the header
        holds. Not checked against :data:`TENANT_RE` here: :meth:`known` does."""
        return "" if self._cfg.ignore_tenant_header else header

    def unknown_tenant_detail(self, tenant: str) -> str:
        """What the client (or its operator) can do about a 401 ``unknown_tenant``
        for ``tenant`` (the header value, ``""`` when absent). Names options, never
        key files, paths or other tenants."""
        if not tenant:
            return (
                "this server has no default key: send X-Tenant-Id naming a tenant "
                "of its --tenants-dir"
            )
        if not self.multi_tenant:
            return (
                "this server has no tenants: omit the X-Tenant-Id header, or start "
                "the server with --ignore-tenant-header (one tenant) or --tenants-dir "
                "(a key per tenant)"
            )
        if TENANT_RE.fullmatch(tenant) is None:
            return "X-Tenant-Id must be 1-64 characters of A-Z, a-z, 0-9, _ and -"
        fix = (
            f"no key for tenant {tenant!r}: add {tenant}.hmac or {tenant}.pub to the "
            "server's --tenants-dir and send it SIGHUP"
        )
        if self._table.default is not None or not self.verify_signatures:
            fix += ", or omit X-Tenant-Id to use the default key"
        return fix

    @property
    def tenant_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._table.tenants))

    def reload(self) -> None:
        """Re-read every key; on failure the old keys stay and the error propagates."""
        self._table = self._load()

    def keyring_for(self, tenant: str) -> Keyring | None:
        """The keyring for ``tenant`` (``""`` = no ``X-Tenant-Id`` header).

        Raises
        ------
        UnknownTenantError
            No such tenant, or no header while no default key is configured.
        """
        table = self._table
        if self._cfg.ignore_tenant_header:
            tenant = ""
        if not tenant:
            if table.default is None and self.verify_signatures:
                raise UnknownTenantError("no X-Tenant-Id and no default key")
            return table.default
        ring = table.tenants.get(tenant)
        if ring is None:
            if not self.multi_tenant and not self.verify_signatures:
                return None
            raise UnknownTenantError(tenant)
        return ring if self.verify_signatures else None

    def known(self, tenant: str) -> bool:
        """Whether a request with this tenant header may proceed to the body (with
        ``--ignore-tenant-header``: any header, as the default tenant)."""
        if self._cfg.ignore_tenant_header:
            tenant = ""
        try:
            self.keyring_for(tenant)
        except UnknownTenantError:
            return False
        return True

    # ------------------------------------------------------------------ loading
    def _load(self) -> _Table:
        cfg = self._cfg
        default: Keyring | None = None
        if cfg.sign_alg == "hmac":
            if cfg.hmac_key_file:
                default = Keyring(
                    {"default": HmacKey(load_hmac_key(path=cfg.hmac_key_file))}
                )
            elif os.environ.get(HMAC_KEY_ENV):
                default = Keyring({"default": HmacKey(load_hmac_key(env=HMAC_KEY_ENV))})
        elif cfg.sign_alg == "ed25519":
            if cfg.ed25519_public_key_file:
                default = Keyring(
                    {
                        "default": Ed25519Key(
                            load_ed25519_public(cfg.ed25519_public_key_file)
                        )
                    }
                )
        tenants = self._load_tenants(cfg.tenants_dir) if cfg.tenants_dir else {}
        if default is None and not tenants and cfg.sign_alg != "none":
            what = (
                "--hmac-key-file or FLK_HMAC_KEY"
                if cfg.sign_alg == "hmac"
                else "--ed25519-public-key-file"
            )
            raise ConfigError(
                f"--sign-alg {cfg.sign_alg} needs a key: {what}, or --tenants-dir"
            )
        return _Table(default, tenants)

    @staticmethod
    def _load_tenants(directory: str) -> dict[str, Keyring]:
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise ConfigError(f"--tenants-dir {directory}: {exc.strerror}") from None
        keys: dict[str, dict[str, VerificationKey]] = {}
        for name in names:
            m = _KEY_FILE_RE.fullmatch(name)
            if m is None:
                continue  # README, editor backups, dotfiles: not keys
            tenant, key_id, kind = m.group(1), m.group(2) or "default", m.group(3)
            path = os.path.join(directory, name)
            key: VerificationKey
            if kind == "hmac":
                key = HmacKey(load_hmac_key(path=path))
            else:
                key = Ed25519Key(load_ed25519_public(path))
            ring = keys.setdefault(tenant, {})
            if key_id in ring:
                raise KeyLoadError(f"tenant {tenant}: key id {key_id} defined twice")
            ring[key_id] = key
        return {tenant: Keyring(ring) for tenant, ring in keys.items()}
