"""Fixtures of the agent tests: the real server in a subprocess (see realserver.py)."""

from __future__ import annotations

from .realserver import server

__all__ = ["server"]
