"""The kernel and protocol microbenchmarks of ``flk bench kernels`` (pytest-benchmark).

Each case is a pair measured in the same run: the kernel and the plain baseline a
user would otherwise write (NumPy, the standard library, scipy), both built by
:mod:`flk_fast.benchsuite.kernel_baselines` (which ``python -m bench.bench_kernels``
uses too). Before timing, each pair is checked to compute the same answer, so a fast
wrong kernel cannot pass.
Not collected by the project's test run (it lives in the package, outside tests/);
``flk bench kernels`` runs it with ``pytest.main``. Problem sizes scale with the
``bench_size`` fixture (``--size``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from flk_fast.benchsuite import kernel_baselines as kb
from flk_fast.benchsuite.kernel_baselines import Pair

# Problem sizes at --size 1.0 (kernel_baselines owns the inputs and the baselines).
#: case name -> builder(size) of (kernel, baseline, baseline description)
CASES: dict[str, Callable[[float], Pair]] = {
    "box_counts": lambda size: kb.box_counts_pair(max(1000, int(200_000 * size))),
    "coherence": lambda size: kb.coherence_pair(max(1000, int(200_000 * size))),
    "theil_sen": lambda size: kb.theil_sen_pair(max(100, int(3000 * size))),
    "d_hat_batch": lambda size: kb.d_hat_batch_pair(max(1000, int(100_000 * size))),
    "merkle": lambda size: kb.merkle_pair(max(2**16, int(16 * 2**20 * size))),
    "parse_verify": lambda size: kb.parse_verify_pair(),
}
_built: dict[tuple[str, float], Pair] = {}


def _pair(case: str, size: float) -> Pair:
    key = (case, size)
    if key not in _built:
        _built[key] = kb.checked(CASES[case](size), case)
    return _built[key]


@pytest.mark.parametrize("role", ["kernel", "baseline"])
@pytest.mark.parametrize("case", list(CASES))
def test_case(benchmark: Any, bench_size: float, case: str, role: str) -> None:
    kernel, baseline, what = _pair(case, bench_size)
    benchmark.group = case
    benchmark.extra_info.update(role=role, baseline=what, size=bench_size)
    fn = kernel if role == "kernel" else baseline
    t0 = time.perf_counter()
    fn()  # warm-up: libraries, caches, thread pools
    if time.perf_counter() - t0 < 0.01:
        benchmark(fn)  # calibrated: many calls per round for fast functions
    else:
        benchmark.pedantic(fn, rounds=3)  # slow baselines: a few rounds suffice
