"""Protocol core per PCS: parse + validate + HMAC verify + SPEC §6 engine.

Compared, in the same run, with the plain way: ``json.loads``, the same shape checks
written as plain Python, ``json.dumps`` for the canonical payload, and the
``cryptography`` HMAC object.
Run: ``python -m bench.bench_protocol [--repeat 7] [--number 20000]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json

import msgspec
from cryptography.hazmat.primitives import hashes, hmac

from bench._report import context, emit, time_per_call
from bench.data import VECTOR
from flk_fast.benchsuite.kernel_baselines import plain_pcs
from flk_fast.protocol.codec import _validate_plain, decode_pcs, encode_pcs
from flk_fast.protocol.signing import (
    HmacSigner,
    Keyring,
    canonical_payload_reference,
    content_digest,
    full_payload,
    full_payload_reference,
)
from flk_fast.protocol.verify import verify_pcs

KEY = b"testsecret"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=20000)
    ap.add_argument("--json", action="store_true", help="print only JSON records")
    args = ap.parse_args()
    body = VECTOR.read_bytes()
    ring = Keyring.hmac({"k": KEY})

    def fast() -> bool:
        pcs = decode_pcs(body)
        ring.verify(pcs)
        return verify_pcs(pcs).accepted

    def plain() -> bool:
        doc = json.loads(body)
        _validate_plain(doc)
        pcs = plain_pcs(doc)
        h = hmac.HMAC(KEY, hashes.SHA256())
        h.update(canonical_payload_reference(pcs))
        h.verify(base64.b64decode(doc["sig"]))
        return verify_pcs(pcs).accepted

    # Version 0.2 (SPEC §3.1): the full payload is signed, and the server also takes
    # its digest for the conflict check of §3.2, as the handler does.
    v02 = msgspec.structs.replace(decode_pcs(body), version="0.2")
    body02 = encode_pcs(msgspec.structs.replace(v02, sig=HmacSigner(KEY).sign(v02)))

    def fast02() -> bytes:
        pcs = decode_pcs(body02)
        full = full_payload(pcs)
        ring.verify(pcs, full)
        verify_pcs(pcs)
        return content_digest(pcs, full)

    def plain02() -> bytes:
        doc = json.loads(body02)
        _validate_plain(doc)
        pcs = plain_pcs(doc)
        payload = full_payload_reference(pcs)
        h = hmac.HMAC(KEY, hashes.SHA256())
        h.update(payload)
        h.verify(base64.b64decode(doc["sig"]))
        verify_pcs(pcs)
        return hashlib.sha256(payload).digest()

    assert fast() and plain() and fast02() == plain02()
    print(json.dumps({"context": context()}))
    n, r = args.number, args.repeat
    f = emit(
        "flk_fast decode+verify+engine",
        {"n": n},
        time_per_call(fast, number=n, repeat=r),
    )
    p = emit(
        "plain json+checks+cryptography HMAC+engine",
        {"n": n},
        time_per_call(plain, number=n, repeat=r),
    )
    f02 = emit(
        "flk_fast v0.2 decode+full verify+digest+engine",
        {"n": n},
        time_per_call(fast02, number=n, repeat=r),
    )
    p02 = emit(
        "plain v0.2 json+checks+json.dumps payload+cryptography HMAC+sha256+engine",
        {"n": n},
        time_per_call(plain02, number=n, repeat=r),
    )
    parse = emit(
        "flk_fast decode_pcs only",
        {"n": n},
        time_per_call(lambda: decode_pcs(body), number=n, repeat=r),
    )
    emit(
        "plain json.loads+checks only",
        {"n": n},
        time_per_call(lambda: _validate_plain(json.loads(body)), number=n, repeat=r),
    )
    if not args.json:
        fast_us, plain_us = f["median_s"] * 1e6, p["median_s"] * 1e6
        print(
            f"pipeline: {fast_us:.1f} us/op ({f['ops_per_s']:.0f} ops/s) vs plain "
            f"{plain_us:.1f} us/op: {plain_us / fast_us:.2f}x faster; "
            f"decode alone {parse['median_s'] * 1e6:.2f} us"
        )
        f2, p2 = f02["median_s"] * 1e6, p02["median_s"] * 1e6
        print(f"v0.2 pipeline: {f2:.1f} us/op vs plain {p2:.1f} us/op: {p2 / f2:.2f}x")


if __name__ == "__main__":
    main()
