"""Loading of the compiled kernel modules, with a build hint when one is missing.

The numeric kernels are compiled-only: a missing ``.so`` is an ImportError that says how
to build it, never a silent fall back to a slow path (cf. scikit-learn's
``__check_build``). Only the Merkle hash has a pure-Python twin.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["BUILD_HINT", "load"]

BUILD_HINT = (
    "flk_fast's compiled kernels are not built. From a source checkout run\n"
    "    python setup.py build_ext --inplace -j 2\n"
    "(or reinstall: pip install --no-build-isolation -e .), which needs a C compiler,\n"
    "Cython >= 3 and numpy >= 2. Set FLK_FAST_NO_EXTENSIONS=1 to use the pure-Python\n"
    "Merkle twin; the numeric kernels have no pure fallback."
)


def load(name: str) -> ModuleType:
    """Import ``flk_fast.kernels.<name>`` or raise ImportError with the build hint."""
    try:
        return importlib.import_module(f"flk_fast.kernels.{name}")
    except ImportError as exc:
        raise ImportError(
            f"cannot import the compiled module flk_fast.kernels.{name} ({exc}).\n"
            + BUILD_HINT
        ) from exc
