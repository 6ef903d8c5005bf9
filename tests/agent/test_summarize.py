"""flk_fast.agent.summarize: window → signals → signed PCS, vs the vector and an
independent plain computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flk_fast.agent.source import read_batch
from flk_fast.agent.summarize import (
    SummaryParams,
    compute_signals,
    make_summarizer,
    summarize,
)
from flk_fast.agent.windows import canonical_rows
from flk_fast.protocol.codec import encode_pcs_pretty
from flk_fast.protocol.signing import HmacSigner, Keyring

pytestmark = pytest.mark.needs_ext

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
VECTOR_CSV = str(VECTORS / "tiny_case_1.csv")
VECTOR_PCS = str(VECTORS / "pcs_tiny_case_1.json")


def vector_pcs():  # type: ignore[no-untyped-def]
    events = read_batch(VECTOR_CSV)
    return summarize(
        events.xyz,
        canonical_rows(events.t, events.tails),
        shard_id="test-shard-001",
        epoch=1,
        signer=HmacSigner(b"testsecret"),
        sent_at="2025-01-19T12:00:00Z",
        version="0.1",  # the vector is a version 0.1 PCS (SPEC §8)
    )


def test_vector_byte_for_byte() -> None:
    with open(VECTOR_PCS, encoding="utf-8") as fh:
        assert encode_pcs_pretty(vector_pcs()) == fh.read()


def test_vector_fields_and_signature_verify() -> None:
    pcs = vector_pcs()
    expected = json.loads(Path(VECTOR_PCS).read_text(encoding="utf-8"))
    assert pcs.sig == expected["sig"]
    np.testing.assert_allclose(pcs.v_star, expected["v_star"], rtol=0, atol=1e-12)
    assert Keyring.hmac({"k1": b"testsecret"}).verify(pcs) == "k1"


def test_signals_match_plain_computation(rng) -> None:  # type: ignore[no-untyped-def]
    from tests.reference.boxcount import ref_box_counts
    from tests.reference.compress import ref_compressibility
    from tests.reference.histogram import ref_coherence
    from tests.reference.merkle import ref_merkle_root

    pts = rng.random((500, 3))
    rows = [
        f"{i:.9f},{x!r},{y!r},{z!r}".encode()
        for i, (x, y, z) in enumerate(pts.tolist())
    ]
    raw = b"\n".join(rows)
    params = SummaryParams(
        scales=(2, 4, 8, 16, 32), seed=7, merkle_scheme="blake3-rfc6962", chunk_size=100
    )
    sig = compute_signals(pts, raw, params)
    assert list(sig.n_j) == ref_box_counts(pts, params.scales)
    coh, v, _ = ref_coherence(pts, 100, 20, 7)
    assert sig.coh_star == coh and np.array_equal(sig.v_star, v)
    assert sig.r == ref_compressibility(rows)
    assert sig.merkle_root == ref_merkle_root(raw, "blake3-rfc6962", 100)


def test_unsigned_and_no_events() -> None:
    pcs = summarize(
        [[0.1, 0.2, 0.3]], b"1.000000000,0.1,0.2,0.3", shard_id="s", epoch=0
    )
    assert pcs.sig == "" and pcs.N_j == {"2": 1, "4": 1, "8": 1, "16": 1}
    with pytest.raises(ValueError, match="at least one event"):
        summarize(np.zeros((0, 3)), b"", shard_id="s", epoch=0)


def test_params_validate() -> None:
    with pytest.raises(ValueError, match="distinct"):
        SummaryParams(scales=(2, 2))
    with pytest.raises(ValueError, match="at least 2"):
        SummaryParams(scales=(2,))


def test_make_summarizer_for_agent_windows() -> None:
    class Window:
        def __init__(self) -> None:
            ev = read_batch(VECTOR_CSV)
            self.points = ev.xyz
            self.rows = canonical_rows(ev.t, ev.tails)

    fn = make_summarizer(signer=HmacSigner(b"testsecret"))
    pcs = fn(Window(), shard_id="test-shard-001", epoch=1)
    assert (
        pcs.pcs_id == json.loads(Path(VECTOR_PCS).read_text(encoding="utf-8"))["pcs_id"]
    )
    assert pcs.sent_at == "1970-01-01T00:00:00Z"


def test_n_threads_reaches_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    from flk_fast import kernels

    seen: list[tuple[str, int]] = []
    box, coh = kernels.box_counts, kernels.coherence

    def spy_box(*a: object, n_threads: int = 0) -> object:
        seen.append(("box_counts", n_threads))
        return box(*a, n_threads=n_threads)  # type: ignore[arg-type]

    def spy_coh(*a: object, n_threads: int = 0) -> object:
        seen.append(("coherence", n_threads))
        return coh(*a, n_threads=n_threads)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels, "box_counts", spy_box)
    monkeypatch.setattr(kernels, "coherence", spy_coh)
    ev = read_batch(VECTOR_CSV)

    class Window:
        points = ev.xyz
        rows = canonical_rows(ev.t, ev.tails)

    one = make_summarizer(signer=HmacSigner(b"testsecret"), n_threads=1)
    pcs = one(Window(), shard_id="test-shard-001", epoch=1)
    assert seen == [("box_counts", 1), ("coherence", 1)]
    expected = json.loads(Path(VECTOR_PCS).read_text(encoding="utf-8"))
    assert pcs.pcs_id == expected["pcs_id"] and pcs.coh_star == expected["coh_star"]
    with pytest.raises(ValueError, match="n_threads"):
        SummaryParams(n_threads=-1)
