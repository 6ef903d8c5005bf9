"""coherence vs the literal numpy loop of SPEC §4.3.

coh★ must be equal and v★ the same direction. numpy computes ``P @ v`` through BLAS;
the kernel reproduces this machine's OpenBLAS operation order, so projections are
normally bit-identical. If another BLAS rounds a projection differently by an ulp and
that projection sits on a bin edge, one count can move: when counts disagree, the
test does not loosen anything, it fails and says exactly which point, direction and
edge caused it (or that it is a real bug, when no projection is near an edge).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.reference.histogram import ref_coherence, ref_coherence_directions

from ._hyp import HYP

pytestmark = pytest.mark.needs_ext


@pytest.fixture(scope="module")
def coherence():  # type: ignore[no-untyped-def]
    from flk_fast.kernels import coherence

    return coherence


def explain_mismatch(
    points: np.ndarray, n_directions: int, n_bins: int, seed: int
) -> str:
    """Why kernel and numpy disagree: projections that differ, and projections within
    4 ulp of one of numpy's bin edges."""
    from flk_fast.kernels import _hist_cy

    pts = np.ascontiguousarray(points, dtype=np.float64)
    dirs = ref_coherence_directions(pts.shape[1], n_directions, seed)
    notes = []
    for j, v in enumerate(dirs):
        p_np = pts @ v
        p_k = _hist_cy.project_f64(pts, np.ascontiguousarray(v))
        differ = np.flatnonzero(p_np != p_k)
        if p_np.max() - p_np.min() >= 1e-9:
            _, edges = np.histogram(p_np, bins=n_bins)
            gap = np.abs(p_np[:, None] - edges[None, :]).min(axis=1)
            near = np.flatnonzero(gap <= 4 * np.spacing(np.abs(p_np)))
        else:
            near = np.array([], dtype=np.int64)
        for i in sorted(set(differ.tolist()) & set(near.tolist()))[:5]:
            notes.append(
                f"direction {j} point {i}: numpy P@v={p_np[i]!r} kernel={p_k[i]!r} "
                f"lies within 4 ulp of a bin edge"
            )
        if len(differ) and not notes:
            notes.append(
                f"direction {j}: {len(differ)} projections differ in the last "
                "bit but none is near an edge"
            )
    if not notes:
        return "REAL BUG: projections are identical, yet the counts differ"
    return "near-bin-edge disagreement (BLAS rounding), not loosened:\n" + "\n".join(
        notes
    )


def check(coherence, pts, n_directions=100, n_bins=20, seed=0) -> None:  # type: ignore[no-untyped-def]
    got = coherence(pts, n_directions, n_bins, seed)
    coh, v, _ = ref_coherence(pts, n_directions, n_bins, seed)
    if got.coh_star != coh or not np.array_equal(got.v_star, v):
        pytest.fail(
            f"coherence mismatch: kernel ({got.coh_star}, {got.v_star}) vs numpy "
            f"({coh}, {v})\n" + explain_mismatch(pts, n_directions, n_bins, seed)
        )
    # v★ is the sampler's own vector: equal, well within the 1e-12 of the issue.
    np.testing.assert_allclose(got.v_star, v, rtol=0, atol=1e-12)


def test_vector_points(coherence) -> None:  # type: ignore[no-untyped-def]
    pts = np.loadtxt(Path(__file__).parent / "data" / "tiny_case_1_points.txt")
    got = coherence(pts, seed=42)
    assert got.coh_star == 0.066666667
    np.testing.assert_array_equal(
        got.v_star, [0.6000020458127243, -0.16701530057610703, 0.7823703946303298]
    )


# Sizes straddle the tile (256 rows) and parallel chunk (16384 rows) boundaries.
@pytest.mark.parametrize("n", [1, 2, 255, 256, 257, 16383, 16384, 16385, 40000])
@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 8])
def test_matches_numpy(coherence, rng, n, d) -> None:  # type: ignore[no-untyped-def]
    check(
        coherence, rng.random((n, d)), n_directions=20, seed=int(rng.integers(1 << 31))
    )


def test_projection_is_bit_identical_to_numpy(rng) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import _hist_cy

    for d in range(1, 10):
        pts = rng.standard_normal((3000, d)) * 10.0 ** rng.integers(-3, 4)
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)
        p = _hist_cy.project_f64(pts, v)
        same = p == pts @ v
        assert same.all(), (
            f"d={d}: {(~same).sum()} projections differ from numpy's BLAS"
        )


def test_empty_all_equal_and_single(coherence) -> None:  # type: ignore[no-untyped-def]
    empty = coherence(np.zeros((0, 3)), seed=1)
    assert empty.coh_star == 0.0
    np.testing.assert_array_equal(empty.v_star, ref_coherence_directions(3, 1, 1)[0])
    check(coherence, np.full((50, 3), 0.25), seed=3)  # every range < 1e-9 -> 1.0
    check(coherence, np.array([[0.1, 0.2, 0.3]]), seed=3)
    check(coherence, np.repeat(np.array([[0.0, 1.0], [1.0, 0.0]]), 10, axis=0), seed=5)


def test_values_on_bin_edges(coherence) -> None:  # type: ignore[no-untyped-def]
    # Integer grid along one axis: many projections land exactly on edges, and the
    # maximum lands on the closed last bin.
    pts = np.arange(41, dtype=np.float64).reshape(-1, 1)
    for n_bins in (1, 2, 3, 20, 40, 41):
        check(coherence, pts, n_directions=4, n_bins=n_bins, seed=0)


def test_threads_do_not_change_the_answer(coherence, rng) -> None:  # type: ignore[no-untyped-def]
    pts = rng.random((50000, 3))
    a = coherence(pts, 30, 20, 7, n_threads=1)
    b = coherence(pts, 30, 20, 7, n_threads=2)
    assert a.coh_star == b.coh_star and np.array_equal(a.v_star, b.v_star)


def test_float32_is_promoted_like_numpy(coherence, rng) -> None:  # type: ignore[no-untyped-def]
    pts = rng.random((500, 3)).astype(np.float32)
    check(coherence, pts.astype(np.float64), seed=11)
    a, b = coherence(pts, seed=11), coherence(pts.astype(np.float64), seed=11)
    assert a.coh_star == b.coh_star and np.array_equal(a.v_star, b.v_star)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(points=[[np.nan, 0.0]]), "finite"),
        (dict(points=[1.0, 2.0]), "2-D"),
        (dict(points=[[1.0]], n_directions=0), ">= 1"),
        (dict(points=[[1.0]], n_bins=0), ">= 1"),
        (dict(points=[[1e308, 1e308], [-1e308, -1e308]]), "overflow"),
    ],
)
def test_rejects_bad_input(coherence, kw, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        coherence(**kw)


@HYP
@given(
    pts=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 60), st.sampled_from([1, 2, 3, 8])),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
        | st.sampled_from([0.0, 0.5, 1.0, 0.1]),
    ),
    seed=st.integers(0, 2**32 - 1),
    n_bins=st.integers(1, 25),
)
def test_hypothesis_vs_numpy(coherence, pts, seed, n_bins) -> None:  # type: ignore[no-untyped-def]
    check(coherence, pts, n_directions=10, n_bins=n_bins, seed=seed)


@pytest.mark.parametrize("n_bins", [63, 64, 65, 200])
def test_many_bins_take_the_exact_path(coherence, rng, n_bins) -> None:  # type: ignore[no-untyped-def]
    # Above 64 bins the fast path's interleaved counters are not used.
    check(coherence, rng.random((3000, 3)), n_directions=10, n_bins=n_bins, seed=3)


def test_ill_conditioned_ranges(coherence, rng) -> None:  # type: ignore[no-untyped-def]
    # A tiny spread far from 0: the edges' own rounding is a sizeable part of a bin,
    # so every point takes numpy's exact procedure.
    check(coherence, 1e6 + 1e-4 * rng.random((2000, 3)), n_directions=10, seed=4)


def _cell_cases(rng):  # type: ignore[no-untyped-def]
    """Point sets for the grid-cell min/max: uniform, clustered, a constant column,
    lattices (ties on cell and bin boundaries), large offsets, d = 1, 2, 5."""
    n = 40_000
    yield "uniform", rng.random((n, 3))
    yield (
        "clusters",
        np.concatenate(
            [
                c + 0.01 * rng.standard_normal((n // 4, 3))
                for c in rng.random((4, 3)) * 100
            ]
        ),
    )
    flat = rng.random((n, 3))
    flat[:, 1] = 0.5
    yield "constant column", flat
    yield "lattice", (rng.integers(0, 7, (n, 3)) / 7.0)
    yield "offset", 1e7 + rng.random((n, 3))
    yield "negative wide", rng.standard_normal((n, 3)) * 1e5
    yield "d=1", rng.random((n, 1))
    yield "d=2", rng.random((n, 2))
    yield "d=5", rng.standard_normal((n, 5))
    yield "one far point", np.vstack([rng.random((n, 3)), [[50.0, -40.0, 30.0]]])


def test_cell_minmax_equals_the_full_pass(rng) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import _hist_cy
    from flk_fast.kernels.histogram import coherence_directions

    for name, pts in _cell_cases(rng):
        pts = np.ascontiguousarray(pts)
        dirs = coherence_directions(pts.shape[1], 70, 11)  # > 64: two mask words
        got = _hist_cy.minmax_cells_f64(pts, dirs)
        want = _hist_cy.minmax_f64(pts, dirs, 1)
        assert (got[0] == want[0]).all() and (got[1] == want[1]).all(), name
        for j in (0, 33, 69):  # and numpy's own P @ v (gemv, as the legacy loop)
            p = pts @ dirs[j]
            assert (got[0][j], got[1][j]) == (p.min(), p.max()), name


@pytest.mark.parametrize("n_bins", [2, 19, 20, 31, 32, 33])
def test_large_inputs_match_numpy(coherence, rng, n_bins) -> None:  # type: ignore[no-untyped-def]
    # n >= 2**15 takes the grid-cell min/max; nb <= 32 the byte counters, 33 the
    # scalar ones; the lattice puts many projections exactly on bin edges.
    check(
        coherence, rng.random((40_000, 3)), n_directions=12, n_bins=n_bins, seed=n_bins
    )
    lattice = rng.integers(0, 5, (33_000, 3)).astype(np.float64)
    check(coherence, lattice, n_directions=12, n_bins=n_bins, seed=1)


@pytest.mark.parametrize("n_bins", [5, 20, 32, 40])
def test_points_within_the_fast_paths_margin_of_an_edge(coherence, n_bins) -> None:  # type: ignore[no-untyped-def]
    # d = 1: the directions are +-1, so projections are the points themselves and can
    # be put at chosen distances from the edges, around the fast path's 1e-6-bin
    # margin, in full tiles of 256 and in the partial last one.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    w = 1.0 / n_bins
    offsets = np.array(
        [-3e-6, -2e-6, -1.5e-6, -1e-6, -5e-7, 0.0, 5e-7, 1e-6, 1.5e-6, 2e-6]
    )
    near = (edges[1:-1, None] + w * offsets[None, :]).ravel()
    pts = np.concatenate([[0.0, 1.0], np.tile(near, 40)[:20_000]]).reshape(-1, 1)
    check(coherence, pts, n_directions=6, n_bins=n_bins, seed=2)


@pytest.mark.parametrize("n_bins", [5, 20, 32])
def test_d3_points_near_one_edge_take_the_right_side(coherence, n_bins) -> None:  # type: ignore[no-untyped-def]
    # d = 3 takes the fused project-and-bin step (fixed-point guess, flagged when
    # frac(g) < 64 / 2**24 bins). Points (x, 0, 0) project to x * v[0] for every
    # direction, so x placed at chosen distances from one edge of linspace(0, 1) is
    # that close to an edge in every direction (mirrored when v[0] < 0). More points
    # sit on one side than the other, so the largest count (coh★) moves if any
    # single point lands in the wrong bin; 26 repeats fill full 16-point steps and a
    # partial tile.
    w = 1.0 / n_bins
    below = np.array([-8e-6, -4e-6, -3.8e-6, -3e-6, -2e-6, -1e-6, -5e-7])
    above = np.array([0.0, 5e-7, 1e-6, 2e-6, 2.5e-6, 3e-6, 3.8e-6, 4e-6, 8e-6])
    for i in sorted({1, n_bins // 2, n_bins - 1}):
        x = i * w + w * np.concatenate([below, above])
        col = np.concatenate([[0.0, 1.0], np.tile(x, 26)])
        pts = np.zeros((len(col), 3))
        pts[:, 0] = col
        check(coherence, pts, n_directions=8, n_bins=n_bins, seed=i)


def test_d3_top_and_bottom_edges_in_full_tiles(coherence) -> None:  # type: ignore[no-untyped-def]
    # The points at a direction's maximum land on the last edge (g = n_bins: counted
    # apart in the fused d = 3 step) and those at its minimum within the fraction
    # test's margin of the first. 400 copies of the maximum of x and 300 of the
    # minimum, interleaved with spread points in full 256-row tiles, make the edge
    # bins the largest, so a point lost or misplaced at either edge changes coh★.
    # One direction per call: v[0] > 0 puts x = 1 at the top, v[0] < 0 at the bottom.
    rng = np.random.default_rng(7)
    col = np.concatenate([np.ones(400), np.zeros(300), rng.uniform(0.05, 0.95, 1348)])
    pts = np.zeros((len(col), 3))
    pts[:, 0] = rng.permutation(col)
    signs = {}
    for seed in range(50):
        signs.setdefault(bool(ref_coherence_directions(3, 1, seed)[0, 0] > 0), seed)
    assert set(signs) == {True, False}
    for seed in signs.values():
        for n_bins in (5, 20, 32):
            check(coherence, pts, n_directions=1, n_bins=n_bins, seed=seed)


@pytest.mark.parametrize("n_bins", [5, 20, 32])
def test_each_bin_counted_as_itself(coherence, n_bins) -> None:  # type: ignore[no-untyped-def]
    # The byte counters (bit-sliced on AVX-512: one mask per bin from the bins' bit
    # planes) must give every bin its own count, not a neighbour's: for each bin b,
    # 300 extra points at its centre make it the single largest, so coh★ is b's count
    # and any bin counted as another changes it. Points (x, 0, 0) keep x's bins in
    # every direction (mirrored when v[0] < 0, where b's mirror is the largest); 1 802
    # rows are 7 full tiles and a partial one; 3 directions make a pair and a single.
    rng = np.random.default_rng(n_bins)
    filler = rng.uniform(0.0, 1.0, 1500)
    for b in range(n_bins):
        col = np.concatenate([[0.0, 1.0], filler, np.full(300, (b + 0.5) / n_bins)])
        pts = np.zeros((len(col), 3))
        pts[:, 0] = rng.permutation(col)
        check(coherence, pts, n_directions=3, n_bins=n_bins, seed=b)
