from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
VECTOR_BYTES = (VECTORS / "pcs_tiny_case_1.json").read_bytes()
KEY = b"testsecret"


@pytest.fixture
def vector_doc() -> dict[str, Any]:
    """A fresh, mutable copy of the reference PCS."""
    return json.loads(VECTOR_BYTES)
