"""box_counts vs the set-of-tuples oracle (SPEC §4.1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.reference.boxcount import ref_box_counts

from ._hyp import HYP

pytestmark = pytest.mark.needs_ext

SCALES = [1, 2, 3, 4, 8, 16, 32]


@pytest.fixture(scope="module")
def box_counts():  # type: ignore[no-untyped-def]
    from flk_fast.kernels import box_counts

    return box_counts


# Sizes straddle the hash set's initial capacity (1024 slots, grows at 512 entries).
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [0, 1, 2, 511, 512, 513, 1025, 5000])
@pytest.mark.parametrize("d", [1, 3, 8])
def test_matches_oracle(box_counts, rng, dtype, n, d) -> None:  # type: ignore[no-untyped-def]
    pts = (rng.random((n, d)) * 3 - 1).astype(dtype)
    assert box_counts(pts, SCALES).tolist() == (
        ref_box_counts(pts, SCALES) if n else [0] * 7
    )


def test_duplicates_and_all_equal(box_counts) -> None:  # type: ignore[no-untyped-def]
    pts = np.full((1000, 3), 0.3)
    assert box_counts(pts, [2, 1000]).tolist() == [1, 1]
    pts = np.repeat(np.array([[0.1, 0.2], [0.7, 0.9]]), 50, axis=0)
    assert box_counts(pts, [1, 2, 64]).tolist() == [1, 2, 2]


def test_negative_coordinates_floor_not_truncate(box_counts) -> None:  # type: ignore[no-untyped-def]
    # floor(-0.25 * 2) = -1 but int(-0.5) = 0: the two points share a voxel only if
    # the kernel truncates.
    assert box_counts([[-0.25], [0.25]], [2]).tolist() == [2]


def test_many_distinct_voxels_grow_the_table(box_counts, rng) -> None:  # type: ignore[no-untyped-def]
    pts = rng.random((20000, 2))
    assert box_counts(pts, [100000]).tolist() == ref_box_counts(pts, [100000])


def test_int64_overflow_is_a_clear_error(box_counts) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="overflow int64"):
        box_counts([[1e18, 0.0]], [16])
    with pytest.raises(ValueError, match="overflow int64"):
        box_counts(np.array([[-3e18]], dtype=np.float32), [4])
    # Just below the limit is fine.
    assert box_counts([[2.0**61]], [2]).tolist() == [1]


@pytest.mark.parametrize(
    ("points", "scales", "match"),
    [
        ([[np.nan, 0.0]], [2], "finite"),
        ([[np.inf, 0.0]], [2], "finite"),
        ([0.1, 0.2], [2], "2-D"),
        (np.zeros((3, 0)), [2], "at least one column"),
        ([[0.1]], [0], ">= 1"),
        ([[0.1]], [1.5], "integers"),
        ([["a"]], [2], "real numeric"),
    ],
)
def test_rejects_bad_input(box_counts, points, scales, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        box_counts(points, scales)


@HYP
@given(
    pts=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 40), st.integers(1, 8)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    ),
    scales=st.lists(st.integers(1, 1 << 20), min_size=1, max_size=5),
)
def test_hypothesis_vs_oracle(box_counts, pts, scales) -> None:  # type: ignore[no-untyped-def]
    got = box_counts(pts, scales).tolist()
    assert got == (ref_box_counts(pts, scales) if len(pts) else [0] * len(scales))


def test_threads_do_not_change_the_answer(box_counts, rng) -> None:  # type: ignore[no-untyped-def]
    pts = rng.random((30000, 3))
    one = box_counts(pts, SCALES, n_threads=1)
    two = box_counts(pts, SCALES, n_threads=2)
    assert one.tolist() == two.tolist() == ref_box_counts(pts, SCALES)


@pytest.mark.parametrize("limit", [2.0**20 - 3, 2.0**20 + 5])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_packed_voxel_boundary(box_counts, rng, limit, d) -> None:  # type: ignore[no-untyped-def]
    # Up to d = 3 voxels with |coordinate| < 2**20 are packed into one word; just
    # below and just above that limit must agree with the oracle.
    pts = rng.uniform(-limit, limit, (3000, d))
    pts[0] = limit
    pts[1] = -limit
    pts[2] = -limit + 0.5
    assert box_counts(pts, [1, 2]).tolist() == ref_box_counts(pts, [1, 2])
    assert box_counts(pts.astype(np.float32), [1]).tolist() == ref_box_counts(
        pts.astype(np.float32), [1]
    )


def test_bitmap_and_hash_paths_agree_at_the_budget(box_counts, rng) -> None:  # type: ignore[no-untyped-def]
    # Small n: the bitmap budget is 2**22 cells. Scale 2048 spans 2048**2 = 2**22
    # cells (bitmap), 2049 just more (hash set); negative coordinates too.
    pts = rng.random((500, 2)) - 0.5
    pts[0] = [-0.5, -0.5]
    pts[1] = [0.4999, 0.4999]
    for scales in ([2048], [2049], [1, 2048, 2049, 4096]):
        assert box_counts(pts, scales).tolist() == ref_box_counts(pts, scales)
