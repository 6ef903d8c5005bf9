"""Hypothesis properties of the codec and the canonical payload."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flk_fast.errors import PCSValidationError
from flk_fast.protocol.codec import _validate_plain, decode_pcs
from flk_fast.protocol.signing import canonical_payload, canonical_payload_reference

from .conftest import PROFILE, VECTOR_BYTES

BASE: dict[str, Any] = json.loads(VECTOR_BYTES)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**65), 2**65), finite, st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@PROFILE
@given(
    d_hat=finite,
    coh=finite,
    r=finite,
    budget=finite,
    epoch=st.integers(0, 2**63 - 1),
    shard=st.text(min_size=1, max_size=40),
)
def test_fast_payload_equals_json_dumps_reference(
    d_hat: float, coh: float, r: float, budget: float, epoch: int, shard: str
) -> None:
    doc = dict(
        BASE, D_hat=d_hat, coh_star=coh, r=r, budget=budget, epoch=epoch, shard_id=shard
    )
    pcs = decode_pcs(json.dumps(doc))
    assert canonical_payload(pcs) == canonical_payload_reference(pcs)


@PROFILE
@given(seed=st.integers(0, 2**32), data=st.data())
def test_payload_is_independent_of_key_order(seed: int, data: st.DataObject) -> None:
    keys = list(BASE)
    random.Random(seed).shuffle(keys)
    shuffled = {k: BASE[k] for k in keys}
    assert canonical_payload(decode_pcs(json.dumps(shuffled))) == canonical_payload(
        decode_pcs(VECTOR_BYTES)
    )


@PROFILE
@given(
    k=st.integers(-(10**12), 10**12),
    noise=st.floats(-4e-10, 4e-10),
    field=st.sampled_from(["D_hat", "coh_star", "r", "budget"]),
)
def test_payload_ignores_noise_beyond_nine_decimals(
    k: int, noise: float, field: str
) -> None:
    exact = k / 1e9
    a = decode_pcs(json.dumps(dict(BASE, **{field: exact})))
    b = decode_pcs(json.dumps(dict(BASE, **{field: exact + noise})))
    assert canonical_payload(a) == canonical_payload(b)
    assert canonical_payload(a) == canonical_payload(a)  # same input, same bytes


@PROFILE
@given(
    path=st.sampled_from(list(BASE) + ["ft.outbox_seq", "ft.degraded", "ft.fallbacks"]),
    value=json_values,
)
def test_fast_and_slow_paths_agree(path: str, value: Any) -> None:
    """The msgspec path and the explaining path accept and reject the same bodies."""
    doc = json.loads(VECTOR_BYTES)
    if path.startswith("ft."):
        doc["ft"][path[3:]] = value
    else:
        doc[path] = value
    body = json.dumps(doc).encode()
    try:
        decode_pcs(body)
    except PCSValidationError as exc:
        # the explaining path found the rule (its fallback wording is "malformed PCS")
        assert "malformed PCS" not in str(exc), str(exc)
        return
    _validate_plain(json.loads(body))  # accepted by both
