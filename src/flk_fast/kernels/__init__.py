"""Numeric kernels of SPEC §4-5. Names resolve lazily so that importing one kernel never
loads the others (nor numpy's heavier parts, nor numba).

Compiled kernels (box counts, coherence, Theil-Sen, batch D̂, Merkle) live in
``_<topic>_cy`` extension modules; a missing one raises ImportError with the build
command when its name is first used. See docs/kernels.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the static view of the lazy names below
    from ._warm import warm_up
    from .boxcount import box_counts
    from .compress import compressibility
    from .histogram import Coherence, coherence
    from .merkle import (
        MERKLE_SCHEMES,
        MerkleProof,
        merkle_proof,
        merkle_root,
        merkle_root_file,
        merkle_verify,
    )
    from .robust import TheilSen, d_hat_batch, theil_sen
    from .signals import BudgetParams, RegimeParams, budget, d_hat, regime

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
__all__ = [
    "BudgetParams",
    "Coherence",
    "MERKLE_SCHEMES",
    "MerkleProof",
    "RegimeParams",
    "TheilSen",
    "box_counts",
    "budget",
    "coherence",
    "compressibility",
    "d_hat",
    "d_hat_batch",
    "merkle_proof",
    "merkle_root",
    "merkle_root_file",
    "merkle_verify",
    "regime",
    "theil_sen",
    "warm_up",
]
# Spelled out (not sorted(_EXPORTS)) so type checkers and stubtest can read it.
assert __all__ == sorted(_EXPORTS)


# Not flk_fast._lazy: kernels import nothing else from flk_fast (they stand alone).
def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
