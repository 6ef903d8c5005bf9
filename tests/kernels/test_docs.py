"""The Examples sections of the kernel docstrings run as doctests."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    pytest.param("flk_fast.kernels.boxcount", marks=pytest.mark.needs_ext),
    pytest.param("flk_fast.kernels.histogram", marks=pytest.mark.needs_ext),
    pytest.param("flk_fast.kernels.robust", marks=pytest.mark.needs_ext),
    "flk_fast.kernels.merkle",
    "flk_fast.kernels.compress",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
