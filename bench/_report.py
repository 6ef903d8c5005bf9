"""One JSON record per benchmark case, with the context needed to compare runs."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["context", "emit", "time_per_call"]


def context() -> dict[str, Any]:
    import numpy as np

    import flk_fast
    from flk_fast._env import settings

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "flk_fast": flk_fast.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "settings": settings(),
    }


def time_per_call(fn: Callable[[], Any], *, number: int, repeat: int) -> list[float]:
    """Seconds per call, one figure per repeat (``number`` calls each)."""
    fn()  # warm caches, JITs and lazy imports outside the timing
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out.append((time.perf_counter() - t0) / number)
    return out


def emit(
    label: str, params: dict[str, Any], seconds: list[float], **extra: Any
) -> dict[str, Any]:
    """Print and return one record: median and best seconds per op, ops/s."""
    med = statistics.median(seconds)
    rec = {
        "label": label,
        "params": params,
        "median_s": med,
        "best_s": min(seconds),
        "ops_per_s": 1.0 / med if med else None,
        "repeats": len(seconds),
        **extra,
    }
    print(json.dumps(rec))
    return rec
