"""theil_sen vs the all-pairs brute force (and scipy), d_hat_batch vs the SPEC loop.

Exact equality throughout: the kernel selects among the same floating-point slopes the
brute force sorts, so no tolerance is needed or allowed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reference.robust import ref_d_hat, ref_d_hat_batch, ref_theil_sen

from ._hyp import HYP

pytestmark = pytest.mark.needs_ext


@pytest.fixture(scope="module")
def robust():  # type: ignore[no-untyped-def]
    from flk_fast.kernels import robust

    return robust


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def check(robust, x, y) -> None:  # type: ignore[no-untyped-def]
    got = robust.theil_sen(x, y)
    slope, intercept = ref_theil_sen(x, y)
    assert (got.slope, got.intercept) == (slope, intercept)


def test_matches_scipy(robust, rng) -> None:  # type: ignore[no-untyped-def]
    from scipy import stats

    x = rng.standard_normal(300)
    y = 0.3 * x + rng.standard_normal(300)
    got = robust.theil_sen(x, y)
    ref = stats.theilslopes(y, x)
    assert (got.slope, got.intercept) == (ref.slope, ref.intercept)
    joint = robust.theil_sen(x, y, method="joint")
    ref_joint = stats.theilslopes(y, x, method="joint")
    assert (joint.slope, joint.intercept) == (ref_joint.slope, ref_joint.intercept)


# n straddles the enumeration cap (4096 pairs below which no sampling round runs).
@pytest.mark.parametrize("n", [2, 3, 4, 5, 90, 91, 92, 200, 1500])
def test_random(robust, rng, n) -> None:  # type: ignore[no-untyped-def]
    check(robust, rng.standard_normal(n), rng.standard_normal(n))


@pytest.mark.parametrize(
    "case",
    [
        "collinear",
        "ties_x",
        "ties_y",
        "grid",
        "one_outlier",
        "duplicates",
        "steep",
        "tiny_dx",
    ],
)
def test_edge_inputs(robust, rng, case) -> None:  # type: ignore[no-untyped-def]
    n = 400
    if case == "collinear":  # every slope equal: the whole band is one value
        x = rng.permutation(n).astype(float)
        y = 2.5 * x - 1
    elif case == "ties_x":
        x = rng.integers(0, 7, n).astype(float)
        y = rng.standard_normal(n)
    elif case == "ties_y":
        x = rng.standard_normal(n)
        y = rng.integers(0, 3, n).astype(float)
    elif case == "grid":
        x = rng.integers(0, 20, n) * 0.1
        y = rng.integers(0, 20, n) * 0.1
    elif case == "one_outlier":
        x = np.arange(n, dtype=float)
        y = x.copy()
        y[17] = 1e9
    elif case == "duplicates":
        base = rng.standard_normal((40, 2))
        pts = base[rng.integers(0, 40, n)]
        x, y = pts[:, 0], pts[:, 1]
    elif case == "steep":
        x = 1e-6 * rng.standard_normal(n)
        y = 1e6 * rng.standard_normal(n)
    else:  # nearly equal x far from 0: slopes computed from cancelling differences
        x = 1e6 + rng.integers(0, 50, n) * 1e-7
        y = rng.standard_normal(n)
    check(robust, x, y)


def test_large_n_against_brute_force(robust, rng) -> None:  # type: ignore[no-untyped-def]
    # 3000 points: 4.5 M slopes, several shrinking rounds before the final selection.
    x = rng.standard_normal(3000)
    y = x + 0.1 * rng.standard_cauchy(3000)
    check(robust, x, y)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        ([1.0], [1.0], "at least 2"),
        ([1.0, 2.0], [1.0], "same length"),
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "all x are equal"),
        ([1.0, np.nan], [1.0, 2.0], "finite"),
        ([1.0, 1e301], [1.0, 2.0], "1e300"),
        ([0.0, 5e-324], [0.0, 1.0], "overflow"),
    ],
)
def test_rejects_bad_input(robust, x, y, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        robust.theil_sen(x, y)


@HYP
@given(
    pts=st.lists(
        st.tuples(
            st.integers(-5, 5) | st.floats(-100, 100, allow_nan=False),
            st.integers(-5, 5) | st.floats(-100, 100, allow_nan=False),
        ),
        min_size=2,
        max_size=120,
    )
)
def test_hypothesis_vs_brute_force(robust, pts) -> None:  # type: ignore[no-untyped-def]
    x = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts], dtype=float)
    if len(np.unique(x)) < 2:
        with pytest.raises(ValueError, match="all x are equal"):
            robust.theil_sen(x, y)
        return
    with np.errstate(over="ignore"):
        steepest = (y.max() - y.min()) / np.diff(np.unique(x)).min()
    if not steepest < 1e300:  # the documented, conservative overflow guard
        with pytest.raises(ValueError, match="overflow"):
            robust.theil_sen(x, y)
        return
    check(robust, x, y)


# ------------------------------------------------------------------ d_hat_batch


def test_d_hat_batch_vector_row(robust) -> None:  # type: ignore[no-untyped-def]
    assert robust.d_hat_batch([2, 4, 8, 16], [[5, 10, 13, 15]]).tolist() == [
        0.528320834
    ]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 16, 17, 25])
def test_d_hat_batch_matches_scalar(robust, rng, k) -> None:  # type: ignore[no-untyped-def]
    scales = rng.integers(1, 64, (500, k))
    n_j = rng.integers(-2, 5000, (500, k))
    got = robust.d_hat_batch(scales, n_j)
    ref = ref_d_hat_batch(scales, n_j)
    assert all(same(a, b) for a, b in zip(got.tolist(), ref.tolist(), strict=True))
    shared = robust.d_hat_batch(scales[0], n_j)
    ref_shared = ref_d_hat_batch(scales[0], n_j)
    assert all(
        same(a, b) for a, b in zip(shared.tolist(), ref_shared.tolist(), strict=True)
    )


def test_d_hat_batch_agrees_with_signals_d_hat(robust, rng) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import d_hat

    scales = [2, 4, 8, 16, 32]
    n_j = rng.integers(1, 10**6, (2000, 5))  # beyond the 4096-entry log2 table too
    got = robust.d_hat_batch(scales, n_j, n_threads=2)
    assert got.tolist() == [d_hat(scales, row) for row in n_j.tolist()]


@pytest.mark.parametrize("scales", [[2, 4, 8, 16], [3, 5, 7, 11], [1, 2, 4, 8]])
def test_d_hat_batch_six_slopes_path(robust, rng, scales) -> None:  # type: ignore[no-untyped-def]
    # Four distinct shared scales: six slopes, the sorting-network path, with dx of
    # powers of two (multiplied by the exact inverse) and not ([3, 5, 7, 11]); many
    # rows so every order of six slopes occurs, ties included (small counts)
    n_j = np.concatenate(
        [rng.integers(1, 10**6, (20000, 4)), rng.integers(1, 6, (5000, 4))]
    )
    got = robust.d_hat_batch(scales, n_j, n_threads=1)
    ref = ref_d_hat_batch(np.array(scales), n_j)
    assert all(same(a, b) for a, b in zip(got.tolist(), ref.tolist(), strict=True))


def test_d_hat_batch_shapes(robust) -> None:  # type: ignore[no-untyped-def]
    assert robust.d_hat_batch([2, 4], np.zeros((0, 2), dtype=np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="2-D"):
        robust.d_hat_batch([2, 4], [5, 10])
    with pytest.raises(ValueError, match="columns"):
        robust.d_hat_batch([2, 4, 8], [[5, 10]])
    with pytest.raises(ValueError, match="rows"):
        robust.d_hat_batch([[2, 4], [2, 4]], [[5, 10]])
    with pytest.raises(ValueError, match="integers"):
        robust.d_hat_batch([2, 4], [[5.5, 10.0]])


@HYP
@given(
    x=st.floats(-1e6, 1e6, allow_nan=False)
    | st.integers(-(10**6), 10**6).map(lambda i: i / 1024)
    | st.integers(-(10**9), 10**9).map(lambda i: i * 1e-9 + 5e-10)
)
def test_round9_is_pythons_round(x: float) -> None:
    from flk_fast.kernels import _robust_cy

    got = _robust_cy.round9(x)
    assert got == round(x, 9) and math.copysign(1, got) == math.copysign(1, round(x, 9))


@HYP
@given(
    scales=st.lists(st.integers(1, 40), min_size=0, max_size=7),
    data=st.data(),
)
def test_d_hat_batch_hypothesis(robust, scales, data) -> None:  # type: ignore[no-untyped-def]
    k = len(scales)
    rows = data.draw(
        st.lists(
            st.lists(st.integers(-1, 10**5), min_size=k, max_size=k),
            min_size=1,
            max_size=5,
        )
    )
    got = robust.d_hat_batch(
        np.array(scales, dtype=np.int64),
        np.array(rows, dtype=np.int64).reshape(len(rows), k),
    )
    assert all(
        same(g, ref_d_hat(scales, r)) for g, r in zip(got.tolist(), rows, strict=True)
    )
