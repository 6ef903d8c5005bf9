"""agent.summarize.make_summarizer vs the vector and the plain oracle."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np

from flk_fast._env import NO_EXTENSIONS
from flk_fast.agent.source import parse_csv_block
from flk_fast.agent.summarize import make_summarizer
from flk_fast.agent.windows import Windower
from flk_fast.protocol.signing import HmacSigner

from . import plainsum

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _expected_ft(clean: dict[str, object]) -> dict[str, object]:
    """``ft`` says when the pure-Python Merkle twin made the root (tox env noext)."""
    if not NO_EXTENSIONS:
        return clean
    return {**clean, "degraded": True, "fallbacks": ["merkle:pure-python"]}


def test_reproduces_the_vector() -> None:
    d = VECTORS
    b, bad = parse_csv_block((d / "tiny_case_1.csv").read_bytes())
    assert bad == []
    w = Windower(1000)
    w.push(b)
    win = w.flush()
    # The vector is a version 0.1 PCS; the agent signs 0.2 unless told otherwise.
    s = make_summarizer(signer=HmacSigner(b"testsecret"), version="0.1")
    got = msgspec.to_builtins(s(win, shard_id="test-shard-001", epoch=1))
    ref = json.loads((d / "pcs_tiny_case_1.json").read_text())
    for k in ref:
        if k in ("sent_at", "v_star", "ft"):
            continue  # sent_at is stamped per send (outbox.stamp); ft below
        assert json.dumps(got[k]) == json.dumps(ref[k]), k
    assert json.loads(json.dumps(got["ft"])) == _expected_ft(ref["ft"])
    # v_star: the same RandomState draws, normalised; 1e-12 as SPEC §8 allows.
    np.testing.assert_allclose(got["v_star"], ref["v_star"], rtol=0, atol=1e-12)


def test_matches_plain_oracle_on_random_windows(rng: np.random.Generator) -> None:
    n = 3000
    block = b"".join(
        b"%.3f,%.4f,%.4f,%.4f\n" % (i * 0.01, *rng.random(3)) for i in range(n)
    )
    b, _ = parse_csv_block(block, 0, 2)
    s = make_summarizer(signer=HmacSigner(b"testsecret"))
    for epoch, w in enumerate(Windower(1000).push(b), 1):
        a = s(w, shard_id="s", epoch=epoch)
        o = plainsum.summarize(w.points, w.rows, shard_id="s", epoch=epoch)
        assert (
            a.pcs_id,
            a.N_j,
            a.D_hat,
            a.coh_star,
            a.r,
            a.budget,
            a.regime,
            a.sig,
        ) == (o.pcs_id, o.N_j, o.D_hat, o.coh_star, o.r, o.budget, o.regime, o.sig)
        ft, clean = (json.loads(msgspec.json.encode(x.ft)) for x in (a, o))
        assert ft == _expected_ft(clean)


def test_other_merkle_scheme_changes_the_id_only() -> None:
    b, _ = parse_csv_block(b"1,0.1,0.2,0.3\n2,0.4,0.5,0.6\n", 0, 2)
    w = Windower(10)
    w.push(b)
    win = w.flush()
    a = make_summarizer(signer=HmacSigner(b"k"))(win, shard_id="s", epoch=1)
    c = make_summarizer(
        signer=HmacSigner(b"k"), merkle_scheme="blake3-rfc6962", chunk_size=1024
    )(win, shard_id="s", epoch=1)
    assert a.merkle_root != c.merkle_root and a.pcs_id != c.pcs_id
    assert (a.D_hat, a.coh_star, a.r) == (c.D_hat, c.coh_star, c.r)


def test_pure_merkle_twin_is_reported_as_degraded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import _merkle_py, merkle

    b, _ = parse_csv_block(b"1,0.1,0.2,0.3\n2,0.4,0.5,0.6\n", 0, 2)
    w = Windower(10)
    w.push(b)
    win = w.flush()
    fast = make_summarizer(signer=HmacSigner(b"k"))(win, shard_id="s", epoch=1)
    monkeypatch.setattr(merkle, "_impl", _merkle_py)
    slow = make_summarizer(signer=HmacSigner(b"k"))(win, shard_id="s", epoch=1)
    assert (slow.ft.degraded, slow.ft.fallbacks) == (True, ("merkle:pure-python",))
    # Same bytes hashed the same way: only the unsigned ft differs.
    assert (slow.merkle_root, slow.sig) == (fast.merkle_root, fast.sig)
