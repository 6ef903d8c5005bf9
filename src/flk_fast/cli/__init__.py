"""The ``flk`` command line.

Each subcommand lives in a module of this package that defines
``register(subparsers)``; modules are discovered, so adding a command touches one file.
Handlers import their heavy dependencies lazily so that ``flk --help`` stays fast.
Exit codes: 0 success, 1 a negative verdict (e.g. escalated), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Sequence

__all__ = ["compiled_kernels", "main", "version_text"]


def compiled_kernels() -> list[str]:
    """Names of the compiled kernel modules present next to ``flk_fast.kernels``."""
    spec = importlib.util.find_spec("flk_fast.kernels")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = {
        m.name
        for m in pkgutil.iter_modules(list(spec.submodule_search_locations))
        if m.name.endswith("_cy")
    }
    return sorted(found)


def version_text() -> str:
    from flk_fast import __version__
    from flk_fast._env import settings

    compiled = compiled_kernels()
    lines = [
        f"flk_fast {__version__}",
        f"python {sys.version.split()[0]}",
        "compiled kernels: "
        + (", ".join(compiled) if compiled else "none (pure build)"),
        "numba: "
        + ("installed" if importlib.util.find_spec("numba") else "not installed"),
    ]
    env = settings()
    if env:
        lines.append("settings: " + " ".join(f"{k}={v}" for k, v in env.items()))
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kw: object) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            help="show version, compiled kernels and FLK_FAST_* settings, then exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flk",
        description="flk_fast: build, sign, verify, ingest and deliver PCS summaries.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'flk COMMAND --help' for the options and examples of a command.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from flk_fast.errors import ConfigError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except ConfigError as exc:  # e.g. a bad FLK_FAST_* value, found at first import
        print(f"flk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
