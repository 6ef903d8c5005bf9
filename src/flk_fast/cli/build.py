"""``flk build-pcs``: events (CSV / JSONL) → one signed PCS JSON (SPEC §8).

The input is read by the agent's parser (:func:`flk_fast.agent.source.read_batch`), so
``build-pcs`` and ``flk agent`` accept the same files and build the same canonical rows;
here the first malformed line is an error (exit 2) rather than a skipped line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from typing import Any

from flk_fast.cli._common import (
    KEY_ON_COMMAND_LINE,
    add_command,
    add_hmac_key_options,
    add_summary_options,
    fail,
    non_negative_int,
    positive_int,
    refuse_old_key_flags,
)

__all__ = ["register"]

# Both are light (no kernels): argparse needs them for --sig-version's choices.
from flk_fast.agent.summarize import PCS_VERSION  # noqa: E402
from flk_fast.protocol.signing import SIG_VERSIONS  # noqa: E402

#: Default sent_at: build-pcs output is reproducible (same input, same bytes), and this
#: is the reference value of SPEC §8. ``--sent-at now`` stamps the current UTC time.
DEFAULT_SENT_AT = "2025-01-19T12:00:00Z"


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "build-pcs",
        help="summarise an event file (CSV timestamp,x,y,z, or JSONL) into one "
        "signed PCS JSON; exit 2 on malformed input",
        examples="""\
  echo testsecret > secret.key
  flk build-pcs --in vectors/tiny_case_1.csv --hmac-key-file secret.key \\
      --shard-id test-shard-001 --epoch 1 --seed 42 --sig-version 0.1
  (the SPEC §8 vector, a version 0.1 PCS; without --sig-version it is signed 0.2)
  flk build-pcs --in events.jsonl --hmac-key-file secret.key --shard-id s1 \\
      --epoch 7 --merkle-scheme blake3-rfc6962 --sent-at now --out pcs.json
  cat events.csv | flk build-pcs --in - --hmac-key-env FLK_HMAC_KEY --shard-id s1""",
    )
    p.add_argument(
        "--in",
        dest="input",
        required=True,
        metavar="PATH",
        help="event file (CSV or JSONL, by extension or first byte); - for stdin",
    )
    p.add_argument(
        "--out",
        metavar="PATH",
        default="-",
        help="where to write the PCS JSON (default: stdout)",
    )
    p.add_argument(
        "--format",
        choices=("auto", "csv", "jsonl"),
        default="auto",
        help="input format (default: auto)",
    )
    keys = p.add_mutually_exclusive_group()
    add_hmac_key_options(keys)
    keys.add_argument(
        "--unsigned",
        action="store_true",
        help="leave sig empty (only for tests; servers with signing on answer 401)",
    )
    p.add_argument("--shard-id", required=True, help="shard identifier (non-empty)")
    p.add_argument(
        "--epoch", type=non_negative_int, default=0, help="epoch (default 0)"
    )
    add_summary_options(p, kernel_threads=0)
    p.add_argument(
        "--sent-at",
        default=DEFAULT_SENT_AT,
        help=f"RFC 3339 UTC time, or 'now' (default {DEFAULT_SENT_AT}, "
        "so the output is reproducible)",
    )
    p.add_argument(
        "--sig-version",
        choices=SIG_VERSIONS,
        default=PCS_VERSION,
        help=f"what the signature covers (default {PCS_VERSION}): 0.2 every field "
        "a server judges (SPEC §3.1), 0.1 the 8 legacy fields, for old servers",
    )
    p.add_argument(
        "--attempt", type=positive_int, default=1, help="attempt (default 1)"
    )
    # SPEC §8 spells the vector's command with --key SECRET: kept for it alone, hidden,
    # and warned about on every use (the other old spellings are refused).
    keys.add_argument(
        "--key", metavar="SECRET", dest="key_text", help=argparse.SUPPRESS
    )
    refuse_old_key_flags(p, keep=("--key",))
    p.set_defaults(func=run)


def _sent_at(value: str) -> str:
    if value == "now":
        now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
        return now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def run(args: argparse.Namespace) -> int:
    import msgspec

    from flk_fast.agent.source import read_batch
    from flk_fast.agent.summarize import (
        SummaryParams,
        max_abs_coordinate,
        summarize,
    )
    from flk_fast.agent.windows import canonical_rows
    from flk_fast.errors import FlkError
    from flk_fast.protocol.codec import decode_pcs, encode_pcs_pretty
    from flk_fast.protocol.signing import HmacSigner, load_hmac_key

    if not args.shard_id:
        return fail("--shard-id must not be empty")
    if args.key_text is not None:
        print(f"flk build-pcs: warning: --key: {KEY_ON_COMMAND_LINE}", file=sys.stderr)
    elif not (args.hmac_key_file or args.hmac_key_env or args.unsigned):
        return fail(
            "give a signing key: --hmac-key-file F or --hmac-key-env VAR "
            "(or --unsigned)"
        )
    try:
        signer = None
        if not args.unsigned:
            # The argparse group makes exactly one of the sources non-None.
            signer = HmacSigner(
                load_hmac_key(
                    path=args.hmac_key_file, env=args.hmac_key_env, value=args.key_text
                )
            )
        params = SummaryParams(
            scales=args.scales,
            seed=args.seed,
            merkle_scheme=args.merkle_scheme,
            chunk_size=args.chunk_size,
            n_threads=args.kernel_threads,
        )
        batch = read_batch(
            args.input, fmt=args.format, max_abs=max_abs_coordinate(args.scales)
        )
        if len(batch) == 0:
            return fail(f"{args.input}: no events (a PCS needs at least one)")
        pcs = summarize(
            batch.xyz,
            canonical_rows(batch.t, batch.tails),
            shard_id=args.shard_id,
            epoch=args.epoch,
            signer=signer,
            params=params,
            sent_at=_sent_at(args.sent_at),
            attempt=args.attempt,
            version=args.sig_version,
        )
        # The PCS must pass the wire shape it will be judged by (e.g. a bad --sent-at).
        text = encode_pcs_pretty(pcs)
        decode_pcs(text.encode())
    except (FlkError, ValueError, msgspec.ValidationError) as exc:
        return fail(str(exc))
    except ImportError as exc:
        return fail(f"the compiled kernels are missing: {exc}")
    if args.out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            with open(args.out, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        except OSError as exc:
            return fail(f"cannot write {args.out}: {exc.strerror}")
    return 0
