"""Bytes <-> PCS. The only module that knows the wire format.

Decoding has two paths. The fast one is msgspec, which parses and checks the whole shape
of SPEC §1 in C. When it rejects a body, the slow path walks the plain JSON value again
to say exactly which field broke which rule
(``"epoch: must be an integer >= 0, got -3"``): bad bodies are rare, and their error
message is what the user sees.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import msgspec

from flk_fast.errors import PCSValidationError
from flk_fast.protocol.pcs import LIMITS, PCS, SCHEMA

__all__ = ["decode_pcs", "encode_pcs", "encode_pcs_pretty", "pcs_to_dict"]

_DECODER = msgspec.json.Decoder(PCS)
_ENCODER = msgspec.json.Encoder()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL_KEY = re.compile(r"0|[1-9][0-9]{0,18}")
_SENT_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)")


def decode_pcs(
    body: bytes | bytearray | memoryview | str, *, explain: bool = True
) -> PCS:
    """Parse and shape-check one PCS (SPEC §1).

    Parameters
    ----------
    body : bytes
        The raw JSON document (UTF-8).
    explain : bool
        When msgspec rejects the body, re-walk it in Python to name the first broken
        rule (the default). False skips that walk, which costs ~0.1-0.4 s on a 1 MiB
        body, and reports msgspec's own message as ``field="body"``.

    Returns
    -------
    PCS

    Raises
    ------
    PCSValidationError
        The body is not a JSON object of the PCS shape; ``.field`` names the culprit
        (``"body"`` when the document itself is unreadable).

    Examples
    --------
    >>> decode_pcs(b"[]")
    Traceback (most recent call last):
    ...
    flk_fast.errors.PCSValidationError: body: must be a JSON object, got an array
    """
    try:
        pcs = _DECODER.decode(body)
    # msgspec reports bad UTF-8 inside a string as UnicodeDecodeError.
    except (
        msgspec.ValidationError,
        msgspec.DecodeError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        if not explain:
            raise PCSValidationError("body", f"malformed PCS: {exc}") from None
        raise _explain(body, exc) from None
    _check_beyond_schema(pcs)
    return pcs


def encode_pcs(pcs: PCS) -> bytes:
    """Compact JSON bytes of a PCS, fields in wire order."""
    return _ENCODER.encode(pcs)


def pcs_to_dict(pcs: PCS) -> dict[str, Any]:
    """The PCS as plain Python values (lists, dicts), fields in wire order."""
    return msgspec.to_builtins(pcs)


def encode_pcs_pretty(pcs: PCS) -> str:
    """Two-space indented JSON, exactly as the reference implementation writes a PCS
    file (Python ``json.dumps(..., indent=2)``; no trailing newline)."""
    return json.dumps(pcs_to_dict(pcs), indent=2)


# --------------------------------------------------------------------------- checks
def _check_beyond_schema(pcs: PCS) -> None:
    """Rules msgspec's constraints cannot express."""
    if len(set(pcs.scales)) != len(pcs.scales):
        raise PCSValidationError("scales", f"must be distinct, got {list(pcs.scales)}")
    _check_sent_at(pcs.sent_at)


def _check_sent_at(value: str) -> None:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise PCSValidationError(
            "sent_at", f"must be an RFC 3339 UTC timestamp, got {_show(value)}"
        ) from None


# ------------------------------------------------------------------ the slow path
def _explain(body: Any, exc: Exception) -> PCSValidationError:
    """Find the first broken rule in ``body``; fall back to msgspec's own words."""
    try:
        value = _plain_json(body)
        _validate_plain(value)
    except PCSValidationError as found:
        return found
    except Exception:  # noqa: BLE001 - the explainer must never turn bad input into a 500
        pass
    return PCSValidationError("body", f"malformed PCS: {exc}")


class _Constant(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


def _plain_json(body: Any) -> Any:
    if isinstance(body, str):
        text = body
    else:
        raw = bytes(body)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PCSValidationError(
                "body", f"must be UTF-8, invalid byte at offset {exc.start}"
            ) from None
    if not text.strip():
        raise PCSValidationError("body", "empty body: send one PCS as a JSON object")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _Constant as exc:
        raise PCSValidationError(
            "body", f"{exc} is not valid JSON (numbers must be finite)"
        ) from None
    except RecursionError:
        raise PCSValidationError("body", "JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise PCSValidationError(
            "body", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError:  # an integer literal over Python's 4300-digit limit
        raise PCSValidationError(
            "body", "not valid JSON: a number is too long"
        ) from None


def _show(value: Any) -> str:
    """How a JSON value appears in an error: short, and never the whole body."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "a number out of range"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, list):
        return "an array"
    return "an object"


def _fail(field: str, rule: str, value: Any) -> PCSValidationError:
    return PCSValidationError(field, f"{rule}, got {_show(value)}")


def _need_int(field: str, value: Any, minimum: int = _INT64_MIN) -> int:
    rule = (
        "must be an integer"
        if minimum == _INT64_MIN
        else f"must be an integer >= {minimum}"
    )
    if type(value) is not int:
        raise _fail(field, rule, value)
    if value < minimum:
        raise _fail(field, rule, value)
    if value > _INT64_MAX:
        raise _fail(field, "must fit in 64 bits", value)
    return value


def _need_number(field: str, value: Any) -> float:
    if type(value) is bool or not isinstance(value, int | float):
        raise _fail(field, "must be a finite number", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(field, "must be a finite number", value)
    if isinstance(value, int) and abs(value) > 1.7976931348623157e308:
        raise _fail(field, "must be a finite number", "a number out of range")
    return float(value)


def _need_str(
    field: str, value: Any, *, max_len: int | None = None, non_empty: bool = False
) -> str:
    if not isinstance(value, str):
        raise _fail(field, "must be a string", value)
    if non_empty and not value:
        raise PCSValidationError(field, "must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise PCSValidationError(
            field, f"must be at most {max_len} characters, got {len(value)}"
        )
    return value


def _need_hex64(field: str, value: Any) -> None:
    _need_str(field, value)
    if not _HEX64.fullmatch(value):
        raise _fail(field, "must be 64 lowercase hex characters", value)


def _need_list(field: str, value: Any, max_len: int) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(field, "must be a list", value)
    if len(value) > max_len:
        raise PCSValidationError(
            field, f"must have at most {max_len} entries, got {len(value)}"
        )
    return value


def _get(obj: dict[str, Any], name: str, prefix: str = "") -> Any:
    try:
        return obj[name]
    except KeyError:
        raise PCSValidationError(prefix + name, "required field is missing") from None


def _validate_plain(doc: Any) -> None:
    """Every rule of SPEC §1 over a plain JSON value, in wire field order."""
    if not isinstance(doc, dict):
        raise _fail("body", "must be a JSON object", doc)
    _need_hex64("pcs_id", _get(doc, "pcs_id"))
    if _get(doc, "schema") != SCHEMA:
        raise _fail("schema", f'must be "{SCHEMA}"', _get(doc, "schema"))
    _need_str(
        "version", _get(doc, "version"), max_len=LIMITS["version"], non_empty=True
    )
    _need_str(
        "shard_id", _get(doc, "shard_id"), max_len=LIMITS["shard_id"], non_empty=True
    )
    _need_int("epoch", _get(doc, "epoch"), 0)
    _need_int("attempt", _get(doc, "attempt"), 1)
    sent_at = _need_str("sent_at", _get(doc, "sent_at"))
    if not _SENT_AT.fullmatch(sent_at):
        raise _fail("sent_at", "must be an RFC 3339 UTC timestamp", sent_at)
    _check_sent_at(sent_at)
    _need_int("seed", _get(doc, "seed"))
    scales = _need_list("scales", _get(doc, "scales"), LIMITS["scales"])
    if not scales:
        raise PCSValidationError("scales", "must be a non-empty list")
    for i, s in enumerate(scales):
        _need_int(f"scales[{i}]", s, 1)
    if len(set(scales)) != len(scales):
        raise PCSValidationError("scales", f"must be distinct, got {scales}")
    n_j = _get(doc, "N_j")
    if not isinstance(n_j, dict):
        raise _fail("N_j", "must be an object", n_j)
    if len(n_j) > LIMITS["N_j"]:
        raise PCSValidationError(
            "N_j", f"must have at most {LIMITS['N_j']} entries, got {len(n_j)}"
        )
    for key, count in n_j.items():
        if not _DECIMAL_KEY.fullmatch(key):
            raise _fail("N_j", "keys must be decimal integers", key)
        _need_int(f"N_j[{key}]", count)
    _need_number("coh_star", _get(doc, "coh_star"))
    v_star = _need_list("v_star", _get(doc, "v_star"), LIMITS["v_star"])
    for i, v in enumerate(v_star):
        _need_number(f"v_star[{i}]", v)
    _need_number("D_hat", _get(doc, "D_hat"))
    _need_number("r", _get(doc, "r"))
    if _get(doc, "regime") not in ("sticky", "mixed", "non_sticky"):
        raise _fail(
            "regime", "must be one of sticky, mixed, non_sticky", _get(doc, "regime")
        )
    _need_number("budget", _get(doc, "budget"))
    _need_hex64("merkle_root", _get(doc, "merkle_root"))
    _need_str("sig", _get(doc, "sig"), max_len=LIMITS["sig"])
    ft = _get(doc, "ft")
    if not isinstance(ft, dict):
        raise _fail("ft", "must be an object", ft)
    _need_int("ft.outbox_seq", _get(ft, "outbox_seq", "ft."))
    if not isinstance(_get(ft, "degraded", "ft."), bool):
        raise _fail("ft.degraded", "must be a boolean", _get(ft, "degraded", "ft."))
    fallbacks = _need_list(
        "ft.fallbacks", _get(ft, "fallbacks", "ft."), LIMITS["fallbacks"]
    )
    for i, f in enumerate(fallbacks):
        _need_str(f"ft.fallbacks[{i}]", f, max_len=256)
    _need_int("ft.clock_skew_ms", _get(ft, "clock_skew_ms", "ft."))
