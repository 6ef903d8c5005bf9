"""``flk dedup forget``: delete stored outcomes from an LMDB store (the ledger, or an
``lmdb://`` dedup store), the repair of an outcome that fails its checksum."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from ._common import add_command, fail

__all__ = ["register"]

_PCS_ID = re.compile(r"[0-9a-f]{64}")


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "dedup",
        help="repair the LMDB dedup store of flk serve (the ledger by default)",
        examples="  flk dedup forget --data-dir /var/lib/flk c50bb25a…6edf\n"
        "  flk dedup forget --data-dir /var/lib/flk --tenant acme c50bb25a…6edf\n"
        "  flk dedup forget --dedup lmdb:///var/lib/flk/dedup c50bb25a…6edf",
    )
    acts = p.add_subparsers(dest="dedup_command", metavar="ACTION")
    forget = acts.add_parser(
        "forget",
        help="delete the stored outcome of each PCS_ID (one that fails its checksum is "
        "answered 503 stored_outcome_damaged until then); the next resend is judged "
        "again. Safe while flk serve runs",
    )
    forget.add_argument("pcs_id", nargs="+", help="64 lowercase hex digits")
    forget.add_argument(
        "--data-dir",
        default="./flk-data",
        help="the server's --data-dir: its ledger (default ./flk-data)",
    )
    forget.add_argument(
        "--dedup",
        default="",
        help="an lmdb:///path dedup store instead (the server's --dedup)",
    )
    forget.add_argument(
        "--tenant",
        default="",
        help="the X-Tenant-Id the PCS was sent with (default: none)",
    )
    forget.set_defaults(func=_forget)
    p.set_defaults(func=lambda a: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _forget(args: argparse.Namespace) -> int:
    from flk_fast.errors import StorageError
    from flk_fast.server.judge import dedup_key
    from flk_fast.server.keys import TENANT_RE
    from flk_fast.storage.dedup_lmdb import LmdbDedup
    from flk_fast.storage.ledger import ledger_path

    bad = [p for p in args.pcs_id if _PCS_ID.fullmatch(p) is None]
    if bad:
        return fail(f"not a pcs_id (64 lowercase hex digits): {bad[0]!r}")
    if args.tenant and TENANT_RE.fullmatch(args.tenant) is None:
        return fail(f"--tenant {args.tenant!r}: 1-64 characters of A-Z, a-z, 0-9, _, -")
    if args.dedup:
        if not args.dedup.startswith("lmdb://") or not args.dedup[7:]:
            return fail(
                f"--dedup {args.dedup}: only lmdb:///path stores are forgotten "
                "here (Redis: DEL, PostgreSQL: DELETE, see docs/server.md)"
            )
        path, flag = Path(args.dedup[7:]), "--dedup"
    else:
        path, flag = ledger_path(args.data_dir), "--data-dir"
    if not (path / "data.mdb").is_file():
        return fail(f"{flag}: no LMDB store in {path}")
    try:
        # max_dbs: the ledger's named databases besides kv and exp (opened by others)
        store = LmdbDedup(path, max_dbs=256)
    except StorageError as exc:
        return fail(str(exc))
    missing = 0
    try:
        for pcs_id in args.pcs_id:
            if store.forget(dedup_key(args.tenant, pcs_id)):
                print(f"forgotten: {pcs_id}")
            else:
                missing += 1
                print(f"not stored: {pcs_id}")
    finally:
        store.close()
    return 1 if missing else 0
