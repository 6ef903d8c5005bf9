"""Package-level behaviour of flk_fast.kernels: lazy names, no numba, build hints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout


def test_import_kernels_loads_no_numba_and_no_extension() -> None:
    out = _run(
        "import sys, json, flk_fast.kernels; "
        "print(json.dumps(sorted(m for m in sys.modules if 'numba' in m or "
        "m.endswith('_cy'))))"
    )
    assert json.loads(out) == []


@pytest.mark.needs_ext
def test_using_every_kernel_loads_no_numba() -> None:
    out = _run(
        "import sys, flk_fast.kernels as k; k.warm_up(); print('numba' in sys.modules)"
    )
    assert out.strip() == "False"


def test_all_names_resolve() -> None:
    import flk_fast.kernels as k

    for name in k.__all__:
        assert getattr(k, name) is not None
    with pytest.raises(AttributeError):
        k.no_such_kernel  # noqa: B018


def test_missing_extension_says_how_to_build() -> None:
    code = (
        "import sys\n"
        "sys.modules['flk_fast.kernels._boxcount_cy'] = None\n"
        "try:\n"
        "    from flk_fast.kernels import box_counts\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = _run(code)
    assert "flk_fast.kernels._boxcount_cy" in out
    assert "setup.py build_ext --inplace" in out
