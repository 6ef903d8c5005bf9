"""Numeric kernels of SPEC §4-5. Names resolve lazily so that importing one kernel never
loads the others (nor numpy's heavier parts, nor numba).

Compiled kernels (box counts, coherence, Theil-Sen, batch D̂, Merkle) live in
``_<topic>_cy`` extension modules; a missing one raises ImportError with the build
command when its name is first used. See docs/kernels.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BudgetParams": "signals",
    "Coherence": "histogram",
    "MERKLE_SCHEMES": "merkle",
    "MerkleProof": "merkle",
    "RegimeParams": "signals",
    "TheilSen": "robust",
    "box_counts": "boxcount",
    "budget": "signals",
    "coherence": "histogram",
    "compressibility": "compress",
    "d_hat": "signals",
    "d_hat_batch": "robust",
    "merkle_proof": "merkle",
    "merkle_root": "merkle",
    "merkle_root_file": "merkle",
    "merkle_verify": "merkle",
    "regime": "signals",
    "theil_sen": "robust",
    "warm_up": "_warm",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
