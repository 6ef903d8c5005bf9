"""Helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_command", "fail"]


def add_command(
    sub: Any, name: str, *, help: str, examples: str
) -> argparse.ArgumentParser:
    """Add a subcommand whose --help ends with an Examples section."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples.rstrip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def fail(message: str, code: int = 2) -> int:
    """Print one clear error line to stderr and return the exit code."""
    print(f"flk: error: {message}", file=sys.stderr)
    return code
