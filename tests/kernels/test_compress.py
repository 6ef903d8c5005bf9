"""compressibility vs one zlib.compress over the joined rows (SPEC §4.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reference.compress import ref_compressibility

from ._hyp import HYP


def test_vector_value() -> None:
    import os

    from flk_fast.kernels import compressibility

    with open(
        os.path.join(os.path.dirname(__file__), "data", "tiny_case_1_rows.txt"), "rb"
    ) as fh:
        raw = fh.read()
    assert compressibility(raw) == 0.318421053
    assert compressibility(raw.split(b"\n")) == 0.318421053


@pytest.mark.parametrize("n_rows", [0, 1, 2, 1000, 40000])
def test_stream_equals_one_shot(n_rows: int) -> None:
    from flk_fast.kernels import compressibility

    rows = [
        f"{i * 0.1:.9f},{i % 7},{i % 13}.5,{i**2 % 101}".encode() for i in range(n_rows)
    ]
    assert compressibility(iter(rows)) == ref_compressibility(rows)
    assert compressibility(b"\n".join(rows)) == ref_compressibility(rows)


def test_empty_and_incompressible() -> None:
    import os

    from flk_fast.kernels import compressibility

    assert compressibility([]) == 1.0
    assert compressibility([b""]) == 1.0
    assert compressibility(os.urandom(100)) == 1.0  # zlib overhead > 1, clamped


@HYP
@given(rows=st.lists(st.binary(max_size=80), max_size=50))
def test_hypothesis_vs_oracle(rows: list[bytes]) -> None:
    from flk_fast.kernels import compressibility

    assert compressibility(rows) == ref_compressibility(rows)
