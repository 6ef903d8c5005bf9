"""Helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = [
    "MERKLE_SCHEMES",
    "add_command",
    "add_hmac_key_options",
    "add_summary_options",
    "fail",
    "non_negative_int",
    "positive_int",
    "KEY_ON_COMMAND_LINE",
    "refuse_old_key_flags",
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


def add_hmac_key_options(group: Any) -> None:
    """``--hmac-key-file F`` / ``--hmac-key-env VAR``, spelt and explained the same in
    every command that signs or verifies. There is no flag that takes the secret
    itself: a flag's value is visible to every user through ``ps`` and stays in the
    shell history."""
    group.add_argument("--hmac-key-file", metavar="F", help="HMAC-SHA256 secret file")
    group.add_argument(
        "--hmac-key-env", metavar="VAR", help="env var holding the secret"
    )


#: A secret given on the command line: what to use instead (also the warning of the
#: one place that still takes it, ``flk build-pcs --key``, the spelling of SPEC §8).
KEY_ON_COMMAND_LINE = (
    "a secret on the command line is visible in ps and the shell history; put it in "
    "a file (--hmac-key-file F) or an environment variable (--hmac-key-env VAR)"
)

#: The key flags of older releases -> why each is refused, naming its replacement.
#: Refused rather than kept as warning aliases: two spellings of one option are what
#: issue #12 removes.
_OLD_KEY_FLAGS = {
    "--key": f"--key SECRET is refused: {KEY_ON_COMMAND_LINE}",
    "--key-file": "--key-file was renamed: use --hmac-key-file F",
    "--key-env": "--key-env was renamed: use --hmac-key-env VAR",
}


class _RefusedFlag(argparse.Action):
    """An old flag, hidden from --help, that stops parsing with a usage error
    (exit 2) naming its replacement, whether or not a value follows it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(_OLD_KEY_FLAGS[str(option_string)])


def refuse_old_key_flags(
    parser: argparse.ArgumentParser, *, keep: tuple[str, ...] = ()
) -> None:
    """Make ``--key``, ``--key-file`` and ``--key-env`` (less ``keep``) usage errors
    that say what to write instead (without them argparse would answer "unrecognized
    arguments", or take ``--key`` as an abbreviation of a longer flag)."""
    for flag in _OLD_KEY_FLAGS:
        if flag in keep:
            continue
        parser.add_argument(
            flag,
            action=_RefusedFlag,
            nargs="?",
            dest="refused_" + flag.lstrip("-").replace("-", "_"),
            help=argparse.SUPPRESS,
        )
