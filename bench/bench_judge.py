"""The judge per call: compiled (``kernels._judge_cy``) vs the Python oracle.

Same bodies, same run, interleaved rounds (each round times every variant once), so
machine noise hits both alike; the median over rounds is reported. Bodies: the SPEC
vector signed as version 0.1 and 0.2, accepted and escalated (a budget off by 0.5).
A stage profile of the Python judge comes first: where its time goes.
Run: ``taskset -c 1 python -m bench.bench_judge [--rounds 7] [--number 5000]``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import statistics
import tempfile
from pathlib import Path

from bench._report import context, emit, time_per_call
from bench.data import vector_doc
from flk_fast.protocol.codec import decode_pcs
from flk_fast.protocol.pcs import compute_pcs_id
from flk_fast.protocol.signing import HmacKey, HmacSigner, full_payload
from flk_fast.protocol.verify import VerifyParams, verify_pcs
from flk_fast.server.config import ServerConfig
from flk_fast.server.judge import PythonJudge
from flk_fast.server.keys import KeyStore

KEY = b"testsecret"


def _body(version: str, budget_off: float) -> bytes:
    doc = vector_doc()
    doc.update(version=version, epoch=7, sig="")
    doc["budget"] += budget_off
    doc["pcs_id"] = compute_pcs_id(doc["merkle_root"], doc["epoch"], doc["shard_id"])
    doc["sig"] = HmacSigner(KEY).sign(decode_pcs(json.dumps(doc).encode()))
    return json.dumps(doc).encode()


def _profile(body: bytes, number: int) -> None:
    """Stage by stage, what the Python judge spends on one accepted 0.2 body."""
    from flk_fast.protocol.codec import _DECODER

    pcs = decode_pcs(body)
    full = full_payload(pcs)
    key = HmacKey(KEY)
    sig = __import__("base64").b64decode(pcs.sig)
    stages = {
        "msgspec decode (with regex patterns)": lambda: _DECODER.decode(body),
        "decode_pcs (decode + sent_at + scales)": lambda: decode_pcs(body),
        "full_payload": lambda: full_payload(pcs),
        "HMAC match": lambda: key.matches(full, sig),
        "verify_pcs (§6)": lambda: verify_pcs(pcs),
        "answer JSON": lambda: verify_pcs(pcs).to_json(),
        "content digest": lambda: hashlib.sha256(full).digest(),
    }
    for label, fn in stages.items():
        emit(
            f"stage: {label}", {"n": number}, time_per_call(fn, number=number, repeat=3)
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=5000, help="calls per timing")
    ap.add_argument("--json", action="store_true", help="print only JSON records")
    args = ap.parse_args()
    from flk_fast.kernels._judge_cy import CompiledJudge

    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "hmac.key"
        key_file.write_bytes(KEY)
        keys = KeyStore(ServerConfig(data_dir=tmp, hmac_key_file=str(key_file)))
    python = PythonJudge(keys, VerifyParams(), False)
    compiled = CompiledJudge(python)
    bodies = {
        f"{v} {kind}": _body(v, off)
        for v in ("0.1", "0.2")
        for kind, off in (("accepted", 0.0), ("escalated", 0.5))
    }
    for name, body in bodies.items():
        want = python("", body)
        assert compiled("", body) == want, name
        assert want.status == (200 if "accepted" in name else 202), name
    assert compiled.oracle_calls == 0
    print(json.dumps({"context": context()}))
    _profile(bodies["0.2 accepted"], args.number)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, body in bodies.items():
            for impl, judge in (("python", python), ("compiled", compiled)):
                call = functools.partial(judge, "", body)
                times.setdefault((name, impl), []).extend(
                    time_per_call(call, number=args.number, repeat=1)
                )
    lines = []
    for name in bodies:
        py = emit(f"python judge {name}", {"n": args.number}, times[(name, "python")])
        cy = emit(
            f"compiled judge {name}", {"n": args.number}, times[(name, "compiled")]
        )
        ratios = [
            p / c
            for p, c in zip(
                times[(name, "python")], times[(name, "compiled")], strict=True
            )
        ]
        lines.append(
            f"{name:14s} python {py['median_s'] * 1e6:6.2f} us  compiled "
            f"{cy['median_s'] * 1e6:6.2f} us  speed-up {statistics.median(ratios):.2f}x"
        )
    assert compiled.oracle_calls == 0, "a benchmark body went to the oracle"
    if not args.json:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
