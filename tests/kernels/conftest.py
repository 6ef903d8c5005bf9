"""Fixtures for the kernel tests."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import pytest


def _cy_available() -> bool:
    try:
        importlib.import_module("flk_fast.kernels._merkle_cy")
    except ImportError:
        return False
    return True


@pytest.fixture(
    params=[
        pytest.param("cy", marks=pytest.mark.needs_ext),
        "py",
    ]
)
def merkle_impl(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """Run a Merkle test against the compiled module and the pure twin (like aiohttp's
    reader_c / reader_py)."""
    from flk_fast.kernels import merkle

    if request.param == "cy":
        if not _cy_available():
            pytest.fail("flk_fast.kernels._merkle_cy is not built")
        impl = importlib.import_module("flk_fast.kernels._merkle_cy")
    else:
        impl = importlib.import_module("flk_fast.kernels._merkle_py")
    monkeypatch.setattr(merkle, "_impl", impl)
    yield impl
