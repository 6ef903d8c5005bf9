"""Deterministic hypothesis settings for the kernel-vs-oracle tests (CI profile:
derandomized, bounded examples, no deadline because the first call may load a
shared library)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

HYP = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
