"""Numeric kernels of SPEC §4-5. Names resolve lazily so that importing one kernel never
loads the others (nor numba)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BudgetParams": "signals",
    "RegimeParams": "signals",
    "budget": "signals",
    "d_hat": "signals",
    "regime": "signals",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
