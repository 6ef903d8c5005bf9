"""``flk serve``: the ingest server. Every flag mirrors an option of
``flk_fast.server.config.OPTIONS`` (also settable as ``FLK_<NAME>`` or in the TOML
file)."""

from __future__ import annotations

import argparse
from typing import Any

from flk_fast.cli._common import add_command, fail

__all__ = ["register"]


def register(sub: Any) -> None:
    from flk_fast.server.config import OPTIONS

    p = add_command(
        sub,
        "serve",
        help="run the PCS ingest server (POST /v1/pcs/submit, /health, /ready, "
        "/metrics, /openapi.json); flags > FLK_* env vars > --config TOML",
        examples="""\
  FLK_HMAC_KEY=testsecret flk serve --port 8080 --data-dir /var/lib/flk
  flk serve --hmac-key-file secret.key --dedup redis://127.0.0.1:6379/0 --workers 2
  flk serve --sign-alg ed25519 --ed25519-public-key-file agent.pub \\
            --tls-cert server.crt --tls-key server.key
  flk serve --config flk.toml --tenants-dir /etc/flk/tenants  # kill -HUP reloads""",
    )
    for opt in OPTIONS:
        if not opt.cli:
            continue
        kw: dict[str, Any] = {
            "dest": opt.name,
            "default": None,
            "help": f"{opt.help} [env {opt.env}; default {opt.default!r}]",
        }
        if opt.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = opt.type
            kw["metavar"] = opt.name.split("_")[-1].upper()
            if opt.choices:
                kw["choices"] = opt.choices
                kw.pop("metavar")
        p.add_argument(opt.flag, **kw)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    # First thing: SIGHUP's default action kills the process, and the key-reload
    # handler is only installed once the event loop runs; a reload asked for before
    # that is remembered and done then (server/runner.py).
    from flk_fast.server.runner import hold_sighup

    hold_sighup()
    from flk_fast.errors import FlkError
    from flk_fast.server.config import OPTIONS, check_dedup_url, load_config

    cli = {o.name: getattr(args, o.name, None) for o in OPTIONS if o.cli}
    try:
        cfg = load_config(cli)
        check_dedup_url(cfg.dedup_url)  # a bad URL must not leave /ready 503 forever
        from flk_fast.server.keys import KeyStore

        KeyStore(cfg)  # fail before binding when a key is missing or malformed
    except FlkError as exc:
        return fail(str(exc))
    import ssl

    from flk_fast.server.runner import serve, ssl_context

    try:
        ssl_context(cfg)  # unreadable or mismatched TLS files: say so before forking
    except (OSError, ssl.SSLError) as exc:
        return fail(f"TLS: {exc}")
    from flk_fast.errors import StorageError

    try:
        return serve(cfg)
    except OSError as exc:  # port in use, unreadable TLS file, ...
        return fail(f"cannot start: {exc}")
    except StorageError as exc:  # a damaged or full inbox WAL found while opening it
        return fail(f"cannot start: {exc}", 1)
