"""``flk verify`` (judge a PCS file offline) and ``flk keygen`` (make keys)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from flk_fast.cli._common import add_command, fail

__all__ = ["register"]


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "verify",
        help="check a PCS file's shape, signature and signals (SPEC §1-3, §6); "
        "exit 0 accepted and clean, 1 escalated, 2 invalid or bad signature",
        examples="""\
  flk verify pcs.json --hmac-key-file secret.key
  FLK_HMAC_KEY=testsecret flk verify pcs.json --hmac-key-env FLK_HMAC_KEY
  flk verify pcs.json --ed25519-public-key-file agent.pub
  flk verify pcs.json --no-signature --tol-d 0.1""",
    )
    p.add_argument("pcs_file", help="the PCS JSON file, or - for stdin")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--hmac-key-file", metavar="F", help="HMAC-SHA256 secret file")
    keys.add_argument(
        "--hmac-key-env", metavar="VAR", help="env var holding the secret"
    )
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
    try:
        pcs = decode_pcs(body)
        if not args.no_signature:
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
    params = VerifyParams(
        tol_d=args.tol_d, tol_coh=args.tol_coh, tol_budget=args.tol_budget
    )
    result = verify_pcs(pcs, params)
    print(result.to_json().decode())
    return 0 if result.accepted and not result.escalated else 1


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
