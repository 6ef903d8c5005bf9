"""Helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = [
    "MERKLE_SCHEMES",
    "add_command",
    "add_summary_options",
    "fail",
    "non_negative_int",
    "positive_int",
    "scales_arg",
]

# The names flk_fast.kernels.MERKLE_SCHEMES accepts (spelled out: no numpy at --help).
MERKLE_SCHEMES = ("sha256-hexcat", "sha256-rfc6962", "blake3-rfc6962")


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


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def scales_arg(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated box scales, at least 2, distinct, >= 1."""
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 2,4,8,16, got {text!r}"
        ) from None
    if len(vals) < 2 or len(set(vals)) != len(vals) or min(vals) < 1:
        raise argparse.ArgumentTypeError(
            f"need at least 2 distinct scales >= 1, got {text!r}"
        )
    return vals


def add_summary_options(group: Any, *, kernel_threads: int) -> None:
    """The options that decide how a window becomes a PCS (``flk build-pcs`` and
    ``flk agent`` share them, so both compute the same PCS from the same flags)."""
    group.add_argument(
        "--scales",
        type=scales_arg,
        default=(2, 4, 8, 16),
        metavar="LIST",
        help="box-counting scales (2,4,8,16)",
    )
    group.add_argument(
        "--seed", type=int, default=42, metavar="N", help="direction sampler seed (42)"
    )
    group.add_argument(
        "--merkle-scheme",
        default="sha256-hexcat",
        choices=MERKLE_SCHEMES,
        help="Merkle scheme over the canonical rows (sha256-hexcat, the legacy one)",
    )
    group.add_argument(
        "--chunk-size",
        type=positive_int,
        default=64,
        metavar="B",
        help="Merkle leaf size in bytes (64)",
    )
    group.add_argument(
        "--kernel-threads",
        type=non_negative_int,
        default=kernel_threads,
        metavar="N",
        help=f"threads for the box-count and coherence kernels ({kernel_threads}); "
        "0 = FLK_FAST_NUM_THREADS, else every core",
    )
