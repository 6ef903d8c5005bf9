"""The judge: body bytes -> Verdict (SPEC §7 steps 2-5, without their effects).

Two implementations give byte-identical verdicts. ``PythonJudge`` is the plain one and
the oracle of the tests. ``Judge`` is the compiled one (``flk_fast.kernels._judge_cy``):
one C call for a well-formed body; anything unusual (a shape error, a string that needs
JSON escaping, a non-finite number) it hands to the oracle, so error answers stay equal
by construction. ``FLK_FAST_NO_EXTENSIONS=1`` (or a missing extension) makes ``Judge``
the Python one, the same rule as ``kernels.merkle``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from flk_fast import _env
from flk_fast.errors import PCSValidationError, SignatureError
from flk_fast.protocol.codec import decode_pcs
from flk_fast.protocol.signing import (
    LEGACY_VERSION,
    content_digest,
    full_payload,
    legacy_payload,
)
from flk_fast.protocol.verify import VerifyParams, VerifyResult, verify_pcs

from .keys import KeyStore

__all__ = [
    "COMPILED",
    "EXPLAIN_MAX_BODY",
    "Judge",
    "PythonJudge",
    "Verdict",
    "dedup_key",
]

#: Bodies larger than this that msgspec rejects are answered with msgspec's own
#: message: the Python explainer that names the broken rule takes 0.1-0.4 s of the
#: event loop on a 1 MiB body, which a client could repeat at will.
EXPLAIN_MAX_BODY = 64 * 1024
_MSGSPEC_PATH = re.compile(r"- at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_ENC = msgspec.json.Encoder()
_REFUSED_V01 = _ENC.encode(
    {
        "error": "signature",
        "detail": 'version "0.1" is refused by this server (--refuse-sig-v01): its '
        "signature leaves scales, N_j and regime unsigned; sign version 0.2 "
        "(flk agent --sig-version 0.2, the default)",
    }
)


class Verdict(NamedTuple):
    """What the judge found: a final 400/401 answer (``result`` None), or a §6
    verdict still to be stored under ``key``."""

    status: int
    body: bytes
    key: str = ""
    result: VerifyResult | None = None
    #: SHA-256 of the PCS's full payload (SPEC §3.2): tells a resend from a twin.
    digest: bytes = b""


def dedup_key(tenant: str, pcs_id: str) -> str:
    """The dedup key of a PCS: ``tenant + "\\0" + pcs_id``, or the bare ``pcs_id`` for
    the default tenant ``""``. NUL never occurs in a tenant name (``TENANT_RE``)."""
    return f"{tenant}\0{pcs_id}" if tenant else pcs_id


class PythonJudge:
    """The plain judge; pure (no store, no metric).

    Calling it raises ``UnknownTenantError`` for a tenant removed by a key reload.
    """

    compiled = False

    def __init__(self, keys: KeyStore, params: VerifyParams, refuse_v01: bool) -> None:
        self.keys = keys
        self.params = params
        self.refuse_v01 = refuse_v01

    def __call__(self, tenant: str, body: bytes) -> Verdict:
        explain = len(body) <= EXPLAIN_MAX_BODY
        try:
            pcs = decode_pcs(body, explain=explain)
        except PCSValidationError as exc:
            field = exc.field
            if not explain and field == "body":
                # msgspec's message ends in "- at `$.v_star[0]`": name that field.
                at = _MSGSPEC_PATH.search(exc.rule)
                if at is not None:
                    field = at.group(1)
            return Verdict(
                400,
                _ENC.encode({"error": "invalid_pcs", "field": field, "rule": exc.rule}),
            )
        legacy = pcs.version == LEGACY_VERSION
        if legacy and self.refuse_v01:
            return Verdict(401, _REFUSED_V01)
        full = full_payload(pcs)
        ring = self.keys.keyring_for(tenant)
        if ring is not None:
            try:
                ring.verify(pcs, legacy_payload(pcs) if legacy else full)
            except SignatureError as exc:
                return Verdict(
                    401, _ENC.encode({"error": "signature", "detail": str(exc)})
                )
        result = verify_pcs(pcs, self.params)
        status = 200 if result.accepted and not result.escalated else 202
        return Verdict(
            status,
            result.to_json(),
            # One dedup namespace per tenant: a tenant who learns another's pcs_id
            # must not be able to pre-store an answer under it. The default tenant
            # ("") keeps the bare pcs_id. Replay re-judges with the tenant framed in
            # the WAL record, so it uses the same key.
            key=dedup_key(tenant, pcs.pcs_id),
            result=result,
            digest=content_digest(pcs, full),
        )


def _load_compiled() -> type | None:
    if _env.NO_EXTENSIONS:
        return None
    try:
        from flk_fast.kernels import _judge_cy
    except ImportError:
        return None
    return _judge_cy.CompiledJudge


_COMPILED = _load_compiled()
#: True when ``Judge`` is the compiled judge.
COMPILED: bool = _COMPILED is not None


def Judge(  # noqa: N802 - used like a class: Judge(keys, params, refuse_v01)(t, b)
    keys: KeyStore, params: VerifyParams, refuse_v01: bool
) -> Callable[[str, bytes], Verdict]:
    """The judge in use: the compiled one (wrapping a ``PythonJudge`` as its oracle)
    when it is built and ``FLK_FAST_NO_EXTENSIONS`` is unset, else ``PythonJudge``.

    Calling it raises ``UnknownTenantError`` for a tenant removed by a key reload.
    """
    oracle = PythonJudge(keys, params, refuse_v01)
    if _COMPILED is None:
        return oracle
    return _COMPILED(oracle)
