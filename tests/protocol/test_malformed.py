"""Every shape rule of SPEC §1, one row each, with the exact error the user sees.

Each row edits the reference PCS and names the message ``decode_pcs`` must raise. The
same bodies also go through the fast path alone: both paths must reject them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from flk_fast.errors import PCSValidationError
from flk_fast.protocol.codec import decode_pcs

from .conftest import VECTOR_BYTES

Edit = Callable[[dict[str, Any]], Any]


def _set(field: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        doc[field] = value

    return edit


def _set_ft(field: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        doc["ft"][field] = value

    return edit


def _drop(field: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        del doc[field]

    return edit


CASES: list[tuple[str, Edit, str]] = [
    ("missing pcs_id", _drop("pcs_id"), "pcs_id: required field is missing"),
    ("missing sig", _drop("sig"), "sig: required field is missing"),
    ("missing ft", _drop("ft"), "ft: required field is missing"),
    (
        "pcs_id not hex",
        _set("pcs_id", "z" * 64),
        'pcs_id: must be 64 lowercase hex characters, got "' + "z" * 40 + '..."',
    ),
    (
        "pcs_id uppercase",
        _set("pcs_id", "A" * 64),
        'pcs_id: must be 64 lowercase hex characters, got "' + "A" * 40 + '..."',
    ),
    (
        "pcs_id short",
        _set("pcs_id", "ab"),
        'pcs_id: must be 64 lowercase hex characters, got "ab"',
    ),
    ("pcs_id number", _set("pcs_id", 7), "pcs_id: must be a string, got 7"),
    (
        "schema wrong",
        _set("schema", "other"),
        'schema: must be "fractal-lba-kakeya", got "other"',
    ),
    ("version empty", _set("version", ""), "version: must be a non-empty string"),
    (
        "version too long",
        _set("version", "v" * 33),
        "version: must be at most 32 characters, got 33",
    ),
    ("shard_id null", _set("shard_id", None), "shard_id: must be a string, got null"),
    ("shard_id empty", _set("shard_id", ""), "shard_id: must be a non-empty string"),
    (
        "shard_id huge",
        _set("shard_id", "s" * 257),
        "shard_id: must be at most 256 characters, got 257",
    ),
    ("epoch negative", _set("epoch", -3), "epoch: must be an integer >= 0, got -3"),
    ("epoch float", _set("epoch", 1.0), "epoch: must be an integer >= 0, got 1.0"),
    ("epoch bool", _set("epoch", True), "epoch: must be an integer >= 0, got true"),
    ("epoch string", _set("epoch", "1"), 'epoch: must be an integer >= 0, got "1"'),
    (
        "epoch beyond int64",
        _set("epoch", 2**63),
        f"epoch: must fit in 64 bits, got {2**63}",
    ),
    ("attempt zero", _set("attempt", 0), "attempt: must be an integer >= 1, got 0"),
    (
        "sent_at not a time",
        _set("sent_at", "yesterday"),
        'sent_at: must be an RFC 3339 UTC timestamp, got "yesterday"',
    ),
    (
        "sent_at with offset",
        _set("sent_at", "2025-01-19T12:00:00+02:00"),
        'sent_at: must be an RFC 3339 UTC timestamp, got "2025-01-19T12:00:00+02:00"',
    ),
    (
        "sent_at month 13",
        _set("sent_at", "2025-13-19T12:00:00Z"),
        'sent_at: must be an RFC 3339 UTC timestamp, got "2025-13-19T12:00:00Z"',
    ),
    ("seed float", _set("seed", 4.2), "seed: must be an integer, got 4.2"),
    ("scales empty", _set("scales", []), "scales: must be a non-empty list"),
    (
        "scales not list",
        _set("scales", {"a": 1}),
        "scales: must be a list, got an object",
    ),
    (
        "scales zero",
        _set("scales", [2, 0]),
        "scales[1]: must be an integer >= 1, got 0",
    ),
    (
        "scales float",
        _set("scales", [2, 4.5]),
        "scales[1]: must be an integer >= 1, got 4.5",
    ),
    (
        "scales repeated",
        _set("scales", [2, 4, 2]),
        "scales: must be distinct, got [2, 4, 2]",
    ),
    (
        "scales too many",
        _set("scales", list(range(1, 66))),
        "scales: must have at most 64 entries, got 65",
    ),
    ("N_j list", _set("N_j", [5, 10]), "N_j: must be an object, got an array"),
    (
        "N_j bad key",
        _set("N_j", {"two": 5}),
        'N_j: keys must be decimal integers, got "two"',
    ),
    (
        "N_j key with sign",
        _set("N_j", {"-2": 5}),
        'N_j: keys must be decimal integers, got "-2"',
    ),
    ("N_j float value", _set("N_j", {"2": 5.5}), "N_j[2]: must be an integer, got 5.5"),
    (
        "coh_star string",
        _set("coh_star", "0.5"),
        'coh_star: must be a finite number, got "0.5"',
    ),
    (
        "coh_star bool",
        _set("coh_star", False),
        "coh_star: must be a finite number, got false",
    ),
    ("v_star not list", _set("v_star", 1.0), "v_star: must be a list, got 1.0"),
    (
        "v_star element",
        _set("v_star", [1.0, None]),
        "v_star[1]: must be a finite number, got null",
    ),
    ("D_hat null", _set("D_hat", None), "D_hat: must be a finite number, got null"),
    ("r list", _set("r", [0.3]), "r: must be a finite number, got an array"),
    (
        "regime unknown",
        _set("regime", "chaotic"),
        'regime: must be one of sticky, mixed, non_sticky, got "chaotic"',
    ),
    (
        "budget object",
        _set("budget", {}),
        "budget: must be a finite number, got an object",
    ),
    (
        "merkle_root short",
        _set("merkle_root", "00"),
        'merkle_root: must be 64 lowercase hex characters, got "00"',
    ),
    ("sig number", _set("sig", 1), "sig: must be a string, got 1"),
    (
        "sig huge",
        _set("sig", "A" * 300),
        "sig: must be at most 256 characters, got 300",
    ),
    ("ft not object", _set("ft", []), "ft: must be an object, got an array"),
    (
        "ft missing field",
        _set("ft", {"outbox_seq": 0}),
        "ft.degraded: required field is missing",
    ),
    (
        "ft.degraded int",
        _set_ft("degraded", 0),
        "ft.degraded: must be a boolean, got 0",
    ),
    (
        "ft.outbox_seq str",
        _set_ft("outbox_seq", "0"),
        'ft.outbox_seq: must be an integer, got "0"',
    ),
    (
        "ft.fallbacks element",
        _set_ft("fallbacks", [1]),
        "ft.fallbacks[0]: must be a string, got 1",
    ),
    (
        "ft.clock_skew_ms float",
        _set_ft("clock_skew_ms", 0.5),
        "ft.clock_skew_ms: must be an integer, got 0.5",
    ),
]


def _body(edit: Edit) -> bytes:
    doc = json.loads(VECTOR_BYTES)
    edit(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "edit, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_field_rule_error_is_exact(edit: Edit, message: str) -> None:
    with pytest.raises(PCSValidationError) as info:
        decode_pcs(_body(edit))
    assert str(info.value) == message
    assert info.value.field == message.split(":")[0]


RAW: list[tuple[str, bytes, str]] = [
    ("empty body", b"", "body: empty body: send one PCS as a JSON object"),
    ("blank body", b" \r\n\t", "body: empty body: send one PCS as a JSON object"),
    ("array", b"[1, 2]", "body: must be a JSON object, got an array"),
    ("string", b'"pcs"', 'body: must be a JSON object, got "pcs"'),
    ("null", b"null", "body: must be a JSON object, got null"),
    (
        "invalid utf-8",
        b'{"pcs_id": "\xff"}',
        "body: must be UTF-8, invalid byte at offset 12",
    ),
    (
        "NaN",
        VECTOR_BYTES.replace(b"0.318421053", b"NaN"),
        "body: NaN is not valid JSON (numbers must be finite)",
    ),
    (
        "Infinity",
        VECTOR_BYTES.replace(b"0.318421053", b"-Infinity"),
        "body: -Infinity is not valid JSON (numbers must be finite)",
    ),
    (
        "overflowing number",
        VECTOR_BYTES.replace(b"0.318421053", b"1e400"),
        "r: must be a finite number, got a number out of range",
    ),
    ("absurd nesting", b"[" * 100_000 + b"]" * 100_000, "body: JSON nested too deeply"),
    (
        "nesting in unknown field",
        b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "body: JSON nested too deeply",
    ),
    (
        "truncated",
        VECTOR_BYTES[:-20],
        "body: not valid JSON: Unterminated string starting at (line 38, column 5)",
    ),
]


@pytest.mark.parametrize("body, message", [c[1:] for c in RAW], ids=[c[0] for c in RAW])
def test_unreadable_bodies_are_explained(body: bytes, message: str) -> None:
    with pytest.raises(PCSValidationError) as info:
        decode_pcs(body)
    assert str(info.value) == message


LONG_INT = b"1" * 5000


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "pcs_id",
            '"' + "a" * 64 + '\\n"',
            "pcs_id: must be 64 lowercase hex characters",
        ),
        (
            "merkle_root",
            '"' + "e" * 64 + '\\n"',
            "merkle_root: must be 64 lowercase hex characters",
        ),
        (
            "sent_at",
            '"2025-01-19T12:00:00Z\\n"',
            "sent_at: must be an RFC 3339 UTC timestamp",
        ),
        ("N_j", '{"2\\n": 5}', "N_j: keys must be decimal integers"),
        ("epoch", LONG_INT.decode(), "body: not valid JSON: a number is too long"),
        ("D_hat", LONG_INT.decode(), "body: not valid JSON: a number is too long"),
    ],
)
def test_trailing_newlines_and_huge_literals(
    field: str, value: str, message: str
) -> None:
    """Regressions: `$` in a pattern let a final newline through; a 5000-digit integer
    escaped the explaining path as a bare ValueError (a 500 in the server)."""
    doc = json.loads(VECTOR_BYTES)
    doc[field] = "@@"
    body = json.dumps(doc).replace('"@@"', value).encode()
    with pytest.raises(PCSValidationError) as info:
        decode_pcs(body)
    assert str(info.value).startswith(message)


def test_unknown_fields_are_ignored() -> None:
    doc = json.loads(VECTOR_BYTES)
    doc["extension"] = {"nested": [1, 2, {"deep": None}]}
    assert decode_pcs(json.dumps(doc).encode()).pcs_id == doc["pcs_id"]


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    doc = json.loads(VECTOR_BYTES)
    doc["coh_star"] = 0
    pcs = decode_pcs(json.dumps(doc).encode())
    assert pcs.coh_star == 0.0 and isinstance(pcs.coh_star, float)


def test_explain_false_reports_msgspecs_own_message() -> None:
    """``explain=False`` (the server's path for big bodies) skips the slow Python
    re-walk: field "body", msgspec's words, which still point at the culprit."""
    doc = json.loads(VECTOR_BYTES)
    doc["epoch"] = "one"
    body = json.dumps(doc).encode()
    with pytest.raises(PCSValidationError) as info:
        decode_pcs(body, explain=False)
    assert info.value.field == "body"
    assert str(info.value).startswith("body: malformed PCS: ") and "epoch" in str(
        info.value
    )
    with pytest.raises(PCSValidationError) as info:
        decode_pcs(body)
    assert info.value.field == "epoch"
    assert decode_pcs(VECTOR_BYTES, explain=False).pcs_id == doc["pcs_id"]
