"""Oracle of flk_fast.kernels.compressibility (SPEC §4.4): one zlib.compress call."""

from __future__ import annotations

import zlib


def ref_compressibility(rows: list[bytes]) -> float:
    raw = b"\n".join(rows)
    if not raw:
        return 1.0
    return round(min(1.0, max(0.0, len(zlib.compress(raw, 6)) / len(raw))), 9)
