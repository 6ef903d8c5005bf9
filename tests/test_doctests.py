"""The Examples sections of public docstrings run as doctests, against the installed
package."""

from __future__ import annotations

import doctest
import importlib

import pytest

_EXT = pytest.mark.needs_ext
MODULES = [
    "flk_fast.agent.client",
    "flk_fast.agent.retry",
    "flk_fast.agent.source",
    "flk_fast.agent.windows",
    pytest.param("flk_fast.agent.summarize", marks=_EXT),
    pytest.param("flk_fast.kernels.boxcount", marks=_EXT),
    pytest.param("flk_fast.kernels.histogram", marks=_EXT),
    pytest.param("flk_fast.kernels.robust", marks=_EXT),
    "flk_fast.kernels.compress",
    "flk_fast.kernels.merkle",
    "flk_fast.kernels.signals",
    "flk_fast.protocol.codec",
    "flk_fast.protocol.pcs",
    "flk_fast.protocol.signing",
    "flk_fast.protocol.verify",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
