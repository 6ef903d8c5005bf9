"""What ``flk serve`` accepts, taken from the code that owns it (server/config.py's
options table, the CLI parser, the app's routes), for the manifest checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from flk_fast.cli import build_parser
from flk_fast.server.config import OPTIONS, ServerConfig

#: FLK_* variables read outside the options table (server/keys.py: the key itself).
EXTRA_ENV = frozenset({"FLK_HMAC_KEY"})
SERVE_ENV = frozenset(o.env for o in OPTIONS) | EXTRA_ENV


def parse_serve(args: list[str]) -> argparse.Namespace:
    """``args`` (``["serve", ...]``) parsed by the real CLI; SystemExit if refused."""
    assert args and args[0] == "serve", args
    return build_parser().parse_args(args)


def routes(tmp: Path) -> set[str]:
    """The paths the server answers (GET probes and scrapes go to these)."""
    from flk_fast.server.app import make_app

    key = tmp / "hmac.key"
    key.write_bytes(b"k" * 32)
    app = make_app(ServerConfig(data_dir=str(tmp / "data"), hmac_key_file=str(key)))
    return {r.canonical for r in app.router.resources()}
