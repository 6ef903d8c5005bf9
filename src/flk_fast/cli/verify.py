"""``flk verify`` (judge a PCS file offline) and ``flk keygen`` (make keys)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from flk_fast.cli._common import (
    MERKLE_SCHEMES,
    add_command,
    add_hmac_key_options,
    fail,
    positive_int,
)

__all__ = ["register"]


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "verify",
        help="check a PCS file's shape, signature and signals (SPEC §1-3, §6); "
        "exit 0 accepted and clean, 1 escalated, 2 invalid or bad signature. "
        "With --data, recompute every signal from the window's raw events instead: "
        "exit 0 all fields match, 1 a mismatch, 2 bad input or bad signature",
        examples="""\
  flk verify pcs.json --hmac-key-file secret.key
  FLK_HMAC_KEY=testsecret flk verify pcs.json --hmac-key-env FLK_HMAC_KEY
  flk verify pcs.json --ed25519-public-key-file agent.pub
  flk verify pcs.json --no-signature --tol-d 0.1
  flk verify pcs.json --data window.csv            # claimed vs recomputed, per field
  flk verify pcs.json --data window.jsonl --json --hmac-key-file secret.key""",
    )
    p.add_argument("pcs_file", help="the PCS JSON file, or - for stdin")
    data = p.add_argument_group("full recomputation (--data)")
    data.add_argument(
        "--data",
        metavar="WINDOW",
        help="the window's events (CSV timestamp,x,y,z or JSONL, as the agent reads "
        "them): recompute N_j, D_hat, coh_star, v_star, r, regime, budget, "
        "merkle_root and pcs_id and compare each with the PCS; a key is optional",
    )
    data.add_argument(
        "--format",
        choices=("auto", "csv", "jsonl"),
        default="auto",
        help="format of --data (default: auto, by extension or first byte)",
    )
    data.add_argument(
        "--merkle-scheme",
        choices=MERKLE_SCHEMES,
        default=MERKLE_SCHEMES[0],
        help=f"scheme the agent built merkle_root with (default {MERKLE_SCHEMES[0]})",
    )
    data.add_argument(
        "--chunk-size",
        type=positive_int,
        default=64,
        help="Merkle leaf size in bytes the agent used (default 64)",
    )
    data.add_argument(
        "--json", action="store_true", help="print the report as one JSON object"
    )
    keys = p.add_mutually_exclusive_group()
    add_hmac_key_options(keys)
    keys.add_argument(
        "--ed25519-public-key-file", metavar="F", help="PEM or raw 32 bytes"
    )
    keys.add_argument("--no-signature", action="store_true", help="skip the signature")
    p.add_argument("--tol-d", type=float, default=0.15, help="D_hat tolerance (0.15)")
    p.add_argument("--tol-coh", type=float, default=0.05, help="coh_star slack (0.05)")
    p.add_argument("--tol-budget", type=float, default=0.01, help="budget tolerance")
    p.set_defaults(func=_verify)

    k = add_command(
        sub,
        "keygen",
        help="write a new Ed25519 key pair (PEM; private key mode 0600) or HMAC secret",
        examples="""\
  flk keygen agent.key            # writes agent.key and agent.key.pub
  flk keygen --hmac secret.key    # 32 random bytes as hex, mode 0600""",
    )
    k.add_argument("path", help="where to write the private key (never overwritten)")
    k.add_argument("--hmac", action="store_true", help="write an HMAC secret instead")
    k.set_defaults(func=_keygen)


def _verify(args: argparse.Namespace) -> int:
    from flk_fast.errors import FlkError, SignatureError
    from flk_fast.protocol.codec import decode_pcs
    from flk_fast.protocol.signing import (
        Ed25519Key,
        HmacKey,
        Keyring,
        load_ed25519_public,
        load_hmac_key,
    )
    from flk_fast.protocol.verify import VerifyParams, verify_pcs

    try:
        if args.pcs_file == "-":
            body = sys.stdin.buffer.read()
        else:
            body = Path(args.pcs_file).read_bytes()
    except OSError as exc:
        return fail(f"{args.pcs_file}: {exc.strerror}")
    has_key = bool(
        args.hmac_key_file
        or args.hmac_key_env
        or args.ed25519_public_key_file
        or args.no_signature
    )
    if not has_key and args.data is None:
        return fail(
            "give a key (--hmac-key-file, --hmac-key-env, "
            "--ed25519-public-key-file) or --no-signature, or --data WINDOW"
        )
    try:
        pcs = decode_pcs(body)
        if has_key and not args.no_signature:
            if args.ed25519_public_key_file:
                key: Any = Ed25519Key(load_ed25519_public(args.ed25519_public_key_file))
            else:
                secret = (
                    load_hmac_key(path=args.hmac_key_file)
                    if args.hmac_key_file
                    else load_hmac_key(env=args.hmac_key_env)
                )
                key = HmacKey(secret)
            Keyring({"cli": key}).verify(pcs)
    except SignatureError as exc:
        print(json.dumps({"error": "signature", "detail": str(exc)}))
        return 2
    except FlkError as exc:
        field = getattr(exc, "field", "")
        print(json.dumps({"error": "invalid", "field": field, "detail": str(exc)}))
        return 2
    if args.data is not None:
        return _recompute(args, pcs)
    params = VerifyParams(
        tol_d=args.tol_d, tol_coh=args.tol_coh, tol_budget=args.tol_budget
    )
    result = verify_pcs(pcs, params)
    print(result.to_json().decode())
    return 0 if result.accepted and not result.escalated else 1


def _recompute(args: argparse.Namespace, pcs: Any) -> int:
    """``--data``: the recomputation report; exit 0 all match, 1 a mismatch, 2 bad
    input (unreadable or malformed events, none at all, kernels missing)."""
    from flk_fast.agent.recompute import recompute_pcs
    from flk_fast.errors import FlkError

    try:
        report = recompute_pcs(
            args.data,
            pcs,
            fmt=args.format,
            merkle_scheme=args.merkle_scheme,
            chunk_size=args.chunk_size,
        )
    except (FlkError, ValueError) as exc:
        return fail(str(exc))
    except ImportError as exc:
        return fail(f"the compiled kernels are missing: {exc}")
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def format_report(report: Any) -> str:
    """A plain-text table of a RecomputeReport: field, claimed, recomputed, match."""
    rows = [("field", "claimed", "recomputed", "match")]
    for c in report.checks:
        match = "yes" if c.match else "NO"
        rows.append((c.field, _text(c.claimed), _text(c.recomputed), match))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows
    ]
    verdict = (
        "all fields match" if report.ok else "MISMATCH: " + ", ".join(report.mismatches)
    )
    lines.append(f"{report.events} events; {verdict}")
    return "\n".join(lines)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return str(value)


def _keygen(args: argparse.Namespace) -> int:
    from flk_fast.protocol.signing import generate_ed25519

    path = Path(args.path)
    try:
        if args.hmac:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            print(f"wrote HMAC secret {path}")
        else:
            public = path.with_name(path.name + ".pub")
            generate_ed25519(path, public)
            print(f"wrote {path} (private, 0600) and {public}")
    except FileExistsError:
        return fail(f"{path} exists; refusing to overwrite a key")
    except OSError as exc:
        return fail(f"{path}: {exc.strerror}")
    return 0
