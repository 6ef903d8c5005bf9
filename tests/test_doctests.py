"""The Examples sections of public docstrings run as doctests, against the installed
package."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
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
