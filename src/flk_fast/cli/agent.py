"""``flk agent`` (events → delivered PCS), ``flk outbox …`` and ``flk dlq …``.

Exit codes (also in docs/agent.md): 0 everything delivered (accepted or escalated by the
server), 1 some PCS were dead-lettered, 2 bad usage, configuration, key or input
(including a malformed line with ``--on-malformed stop``), 3 the data directory is in
use by another agent, 4 the agent failed (outbox storage error: disk full, a damaged
outbox or checkpoint, I/O; or an internal error; pending PCS stay in the outbox),
5 damaged outbox records whose windows could not be summarised again were dead-lettered
as lost (``lost=N``), 130 interrupted (pending PCS stay in the outbox).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import textwrap
from typing import Any

from flk_fast.cli._common import (
    add_command,
    add_hmac_key_options,
    add_summary_options,
    fail,
    positive_int,
)

__all__ = ["register"]

# Both are light (no kernels): argparse needs them for --sig-version's choices.
from flk_fast.agent.summarize import PCS_VERSION  # noqa: E402
from flk_fast.protocol.signing import SIG_VERSIONS  # noqa: E402

#: Outbox records read (and held) at a time by ``flk outbox replay``/``dlq retry``.
_REPLAY_CHUNK = 256

EXIT_OK, EXIT_DEAD, EXIT_USAGE, EXIT_BUSY, EXIT_FAILED, EXIT_LOST = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130


def _storage_message(exc: BaseException, data_dir: str) -> str:
    """One message per storage failure, the same at start and mid-run."""
    from flk_fast.storage.wal_lmdb import WalDamagedError, WalFullError

    if isinstance(exc, WalFullError):
        return f"outbox: {exc}; pending PCS stay in the outbox"
    if isinstance(exc, WalDamagedError):
        where = os.path.dirname(str(exc.file))
        return (
            f"{exc}. Move {where} aside (keep it for inspection) or restore it from "
            f"a backup, then start again; the PCS pending in it cannot be sent "
            f"({data_dir})"
        )
    return f"outbox: {exc}; pending PCS stay in the outbox"


def _add_delivery_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("delivery (SPEC §7)")
    g.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests in flight, over kept-alive connections (8)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds allowed per request before it counts as a timeout (10)",
    )
    g.add_argument(
        "--retry-base",
        type=float,
        default=1.0,
        metavar="S",
        help="first backoff wait; doubles per retry (1)",
    )
    g.add_argument(
        "--retry-cap",
        type=float,
        default=60.0,
        metavar="S",
        help="longest single backoff wait (60)",
    )
    g.add_argument(
        "--retry-after-cap",
        type=float,
        default=3600.0,
        metavar="S",
        help="longest Retry-After honoured on 429/503; SPEC 7 says wait what the "
        "server asks (3600)",
    )
    g.add_argument(
        "--max-retries",
        type=int,
        default=5,
        metavar="N",
        help="retries for 5xx, timeouts, resets before the DLQ (5)",
    )
    g.add_argument(
        "--tenant-id",
        metavar="T",
        help="send X-Tenant-Id: T (multi-tenant servers pick the key by it)",
    )
    t = p.add_argument_group("TLS (https endpoints; certificates are always verified)")
    t.add_argument(
        "--tls-ca-file",
        metavar="F",
        help="PEM CA bundle that signs the server's certificate; used as the only "
        "trust store (default: the system's)",
    )
    t.add_argument(
        "--tls-cert",
        metavar="F",
        help="client certificate (PEM) for mTLS; needs --tls-key",
    )
    t.add_argument(
        "--tls-key",
        metavar="F",
        help="unencrypted private key (PEM) of --tls-cert",
    )


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "agent",
        help="summarise an event stream into signed PCS and deliver each at least once "
        "(durable outbox, retries, dead-letter queue, exact resume after a crash)",
        examples="""\
  flk agent --endpoint http://127.0.0.1:8080 --in events.csv --shard-id s1 \\
      --window 10000 --data-dir ./agent --hmac-key-file secret.key --exit-when-drained
  tail -F app.log.csv | flk agent --endpoint http://srv:8080 --in - --shard-id s1 \\
      --data-dir ./agent --hmac-key-file secret.key
  flk agent --endpoint http://srv:8080 --in events.jsonl --follow --window-seconds 60 \\
      --idle-flush 90 --shard-id s1 --data-dir ./agent --hmac-key-file secret.key""",
    )
    p.add_argument(
        "--endpoint",
        required=True,
        metavar="URL",
        help="server base URL (http://host:port) or full submit URL",
    )
    p.add_argument(
        "--in",
        dest="input",
        required=True,
        metavar="FILE|-",
        help="CSV (timestamp,x,y,z) or JSONL events; - for stdin",
    )
    p.add_argument(
        "--format",
        choices=("auto", "csv", "jsonl"),
        default="auto",
        help="input format; auto = jsonl for .jsonl/.ndjson/.json, else csv",
    )
    p.add_argument("--shard-id", required=True, metavar="S", help="shard of every PCS")
    p.add_argument(
        "--data-dir",
        required=True,
        metavar="DIR",
        help="outbox, dead-letter queue and input checkpoints (LMDB)",
    )
    keys = p.add_mutually_exclusive_group(required=True)
    add_hmac_key_options(keys)
    keys.add_argument(
        "--ed25519-key-file",
        metavar="F",
        help="Ed25519 private key (PEM PKCS#8 or 32 raw bytes)",
    )
    p.add_argument(
        "--sig-version",
        choices=SIG_VERSIONS,
        default=PCS_VERSION,
        help=f"PCS version, i.e. what the signature covers (default {PCS_VERSION}): "
        "0.2 every field a server judges (SPEC §3.1), 0.1 the 8 legacy fields, for "
        "old servers",
    )

    w = p.add_argument_group("windows and signals")
    w.add_argument(
        "--window",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="events per PCS; with --window-seconds, the cap per window (10000)",
    )
    w.add_argument(
        "--window-seconds",
        type=float,
        metavar="T",
        help="time windows: events in the same floor(timestamp/T) slot",
    )
    w.add_argument(
        "--start-epoch",
        type=int,
        default=1,
        metavar="E",
        help="epoch of the first window of a new data dir (1); later windows "
        "count up, and restarts continue the count",
    )
    add_summary_options(w, kernel_threads=1)  # 1: the agent shares its host
    w.add_argument(
        "--summarizer",
        metavar="MODULE:FUNC",
        help="advanced: a factory FUNC(args) -> summarize(window, shard_id=, "
        "epoch=) replacing the built-in signals",
    )

    i = p.add_argument_group("input")
    i.add_argument(
        "--on-malformed",
        choices=("skip", "stop"),
        default="skip",
        help="a malformed line is logged with its position and skipped, or "
        "stops the agent (exit 2) after delivering what precedes it (skip)",
    )
    i.add_argument(
        "--follow",
        action="store_true",
        help="keep reading FILE as it grows (like tail -f)",
    )
    i.add_argument(
        "--poll",
        type=float,
        default=0.25,
        metavar="S",
        help="follow mode: seconds between looks for new data (0.25)",
    )
    i.add_argument(
        "--idle-flush",
        type=float,
        metavar="S",
        help="follow/stdin: summarise a partial window after S idle seconds",
    )
    i.add_argument(
        "--source-id",
        metavar="ID",
        help="name of the input's checkpoint (default: the file's path)",
    )
    i.add_argument(
        "--restart-input",
        action="store_true",
        help="ignore the input's checkpoint and summarise it from the start",
    )

    r = p.add_argument_group("run")
    r.add_argument(
        "--exit-when-drained",
        action="store_true",
        help="stop once the input is consumed (follow mode: caught up) and "
        "every PCS is acknowledged or dead-lettered; print a summary line",
    )
    r.add_argument(
        "--max-inflight",
        type=positive_int,
        default=256,
        metavar="N",
        help="PCS made but not yet acknowledged before reading pauses (256)",
    )
    r.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="threads summarising windows while the input is parsed; 0 = inline on "
        "the work thread (0; experimental, for hosts with idle cores)",
    )
    r.add_argument(
        "--no-sync",
        action="store_true",
        help="don't fsync the outbox (survives kill -9, not power loss)",
    )
    r.add_argument(
        "--compact-after",
        type=float,
        default=7 * 86400.0,
        metavar="S",
        help="delete acknowledged records older than S seconds, at start and "
        "every --compact-every seconds (7 d)",
    )
    r.add_argument(
        "--compact-every",
        type=float,
        default=3600.0,
        metavar="S",
        help="while running, compact the outbox every S seconds (3600)",
    )
    r.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "off"),
        default="auto",
        help="auto: a bar on a terminal, log lines otherwise",
    )
    r.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    r.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus metrics (flk_agent_*) on --metrics-host:N (off)",
    )
    r.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address of --metrics-port (127.0.0.1; 0.0.0.0 for every interface)",
    )
    r.add_argument(
        "--metrics-textfile",
        metavar="FILE",
        help="write the metrics to FILE (node-exporter textfile collector, e.g. "
        "/var/lib/node_exporter/textfile/flk_agent.prom), atomically (off)",
    )
    r.add_argument(
        "--metrics-every",
        type=float,
        default=15.0,
        metavar="S",
        help="refresh the outbox gauges and the textfile every S seconds (15)",
    )
    r.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default="auto",
        help="log lines as JSON objects (the server's format) or plain text; "
        "auto: text on a terminal, JSON otherwise",
    )
    r.add_argument(
        "--redrive-max-wait",
        type=float,
        default=60.0,
        metavar="S",
        help="longest wait between probes (GET /ready) of a server that is down "
        "while dead letters of transient failures wait to be re-driven (60)",
    )
    _add_delivery_options(p)
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file whose [agent] table (or top level) sets any option above by "
        "its long name, e.g. window = 5000 (also FLK_AGENT_CONFIG)",
    )
    from flk_fast.config import Schema, options_of_parser

    # Flags > FLK_AGENT_<NAME> > [agent] of --config > default (docs/agent.md).
    schema = Schema(options_of_parser(p), "FLK_AGENT_", "agent", strict_env=True)
    p.set_defaults(func=_agent, flk_schema=schema)

    o = add_command(
        sub,
        "outbox",
        help="inspect, resend or compact an agent's outbox",
        examples="""\
  flk outbox status --data-dir ./agent
  flk outbox list --data-dir ./agent --acked 5
  flk outbox show --data-dir ./agent 42 --json
  flk outbox replay --data-dir ./agent --endpoint http://127.0.0.1:8080
  flk outbox compact --data-dir ./agent --older-than 0""",
    )
    osub = o.add_subparsers(dest="action", metavar="ACTION", required=True)
    st = osub.add_parser(
        "status", help="pending/acked counts, checkpoints, epochs, DLQ size"
    )
    st.add_argument("--data-dir", required=True, metavar="DIR")
    st.add_argument("--json", action="store_true", help="one JSON object")
    st.set_defaults(func=_outbox_status)
    li = osub.add_parser(
        "list",
        help="one line per pending PCS and per recently acknowledged one: seq, "
        "state, appended at, shard, epoch, pcs_id (or --json)",
    )
    li.add_argument("--data-dir", required=True, metavar="DIR")
    li.add_argument(
        "--acked",
        type=int,
        default=20,
        metavar="N",
        help="how many of the last acknowledged records to show too (20)",
    )
    li.add_argument("--json", action="store_true", help="JSON lines")
    li.set_defaults(func=_outbox_list)
    sh = osub.add_parser("show", help="one outbox record with its whole PCS")
    sh.add_argument("--data-dir", required=True, metavar="DIR")
    sh.add_argument("seq", type=int, metavar="SEQ", help="outbox seq (from list)")
    sh.add_argument("--json", action="store_true", help="one JSON object")
    sh.set_defaults(func=_outbox_show)
    rp = osub.add_parser(
        "replay",
        help="send every pending PCS now (needs the data dir "
        "free: no agent running on it)",
    )
    rp.add_argument("--data-dir", required=True, metavar="DIR")
    rp.add_argument("--endpoint", required=True, metavar="URL")
    _add_delivery_options(rp)
    rp.set_defaults(func=_outbox_replay)
    cp = osub.add_parser(
        "compact",
        help="delete acknowledged records (and dropped dead "
        "letters) older than --older-than seconds",
    )
    cp.add_argument("--data-dir", required=True, metavar="DIR")
    cp.add_argument("--older-than", type=float, default=0.0, metavar="S")
    cp.set_defaults(func=_outbox_compact)

    d = add_command(
        sub,
        "dlq",
        help="list, requeue or drop dead-lettered PCS",
        examples="""\
  flk dlq list --data-dir ./agent
  flk dlq retry --data-dir ./agent --all --endpoint http://127.0.0.1:8080
  flk dlq drop --data-dir ./agent 3 4""",
    )
    dsub = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = _described(
        dsub,
        "list",
        "one line per dead letter (or --json)",
        "Show every PCS in the dead-letter queue: seq, shard, epoch, last HTTP "
        "status (- for no answer), attempts, transient (yes: a 429/5xx/no-answer "
        "failure the running agent re-drives by itself once the server answers; no: "
        "a 4xx that waits for you), pcs_id and the reason.",
        "flk dlq list --data-dir ./agent\n"
        "flk dlq list --data-dir ./agent --json | jq -r .reason",
    )
    ls.add_argument("--data-dir", required=True, metavar="DIR")
    ls.add_argument("--json", action="store_true", help="JSON lines with the full PCS")
    ls.set_defaults(func=_dlq_list)
    for name, helptext, about, examples in (
        (
            "retry",
            "requeue into the outbox (and send with --endpoint)",
            "Move dead letters back into the outbox, e.g. after fixing the key a "
            "server refused with 401. Without --endpoint the next 'flk agent' run "
            "sends them; with it they are sent now, with the delivery options. The "
            "server deduplicates, so a PCS it already judged gets its first verdict.",
            "flk dlq retry --data-dir ./agent 3 4\n"
            "flk dlq retry --data-dir ./agent --all --endpoint http://127.0.0.1:8080",
        ),
        (
            "drop",
            "drop for good",
            "Remove dead letters you have decided not to deliver (compaction deletes "
            "them from disk later). Their windows are then never judged.",
            "flk dlq drop --data-dir ./agent 7\nflk dlq drop --data-dir ./agent --all",
        ),
    ):
        q = _described(dsub, name, helptext, about, examples)
        q.add_argument("--data-dir", required=True, metavar="DIR")
        q.add_argument(
            "seqs",
            nargs="*",
            type=int,
            metavar="SEQ",
            help="dead-letter seqs (from 'flk dlq list')",
        )
        q.add_argument("--all", action="store_true", help="every dead letter")
        if name == "retry":
            q.add_argument(
                "--endpoint", metavar="URL", help="send the requeued PCS now"
            )
            _add_delivery_options(q)
        q.set_defaults(func=_dlq_retry if name == "retry" else _dlq_drop)


# --------------------------------------------------------------------------- helpers
def _described(
    sub: Any, name: str, help: str, about: str, examples: str
) -> argparse.ArgumentParser:
    """A sub-subcommand whose --help has a description and an examples section."""
    return sub.add_parser(
        name,
        help=help,
        description=textwrap.fill(about, 78),
        epilog="examples:\n" + "\n".join("  " + x for x in examples.splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Plain lines, or (``json``; ``auto`` off a terminal) the server's JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        from flk_fast.logs import JsonFormatter  # the server's format too

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    # Like basicConfig: a process that set up logging already (an embedding
    # application, pytest) keeps its handlers.
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _policy(args: argparse.Namespace) -> Any:
    from flk_fast.agent.retry import RetryPolicy

    return RetryPolicy(
        base_s=args.retry_base,
        cap_s=args.retry_cap,
        max_retries=args.max_retries,
        retry_after_cap_s=args.retry_after_cap,
    )


def _client(args: argparse.Namespace) -> Any:
    """The delivery client of the options; raises ConfigError (exit 2) on bad ones."""
    from flk_fast.agent.delivery import make_client

    return make_client(
        args.endpoint,
        policy=_policy(args),
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        tenant_id=args.tenant_id,
        tls_ca_file=args.tls_ca_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def _load_signer(args: argparse.Namespace) -> Any:
    from flk_fast.protocol import signing

    if args.ed25519_key_file:
        return signing.Ed25519Signer(
            signing.load_ed25519_private(args.ed25519_key_file)
        )
    if args.hmac_key_file:
        return signing.HmacSigner(signing.load_hmac_key(path=args.hmac_key_file))
    return signing.HmacSigner(signing.load_hmac_key(env=args.hmac_key_env))


def _summarizer(args: argparse.Namespace) -> Any:
    if args.summarizer:
        mod, _, func = args.summarizer.partition(":")
        factory = getattr(importlib.import_module(mod), func or "make_summarizer")
        return factory(args)
    from flk_fast.agent.summarize import make_summarizer

    return make_summarizer(
        signer=_load_signer(args),
        scales=args.scales,
        seed=args.seed,
        merkle_scheme=args.merkle_scheme,
        chunk_size=args.chunk_size,
        n_threads=args.kernel_threads,
        version=args.sig_version,
    )


# ----------------------------------------------------------------------------- agent
#: Options ``flk agent`` cannot run without, from a flag, the environment or the file.
_REQUIRED = ("endpoint", "input", "shard_id", "data_dir")
_KEY_OPTIONS = ("hmac_key_file", "hmac_key_env", "ed25519_key_file")


def _resolve(args: argparse.Namespace) -> None:
    """Fill the options not given as flags from FLK_AGENT_* and the TOML file."""
    from flk_fast.config import apply_to_namespace
    from flk_fast.errors import ConfigError

    apply_to_namespace(args, args.flk_schema, os.environ, required=_REQUIRED)
    keys = [n for n in _KEY_OPTIONS if getattr(args, n)]
    if len(keys) != 1:
        flags = ", ".join("--" + n.replace("_", "-") for n in _KEY_OPTIONS)
        raise ConfigError(
            f"exactly one of {flags} is needed (flag, FLK_AGENT_* or --config), "
            f"got {len(keys)}"
        )


def cap_malloc_arenas(limit: int = 1) -> bool:
    """Let glibc's malloc keep at most ``limit`` arenas (True if it was set).

    glibc gives every thread that allocates an arena of its own (up to 8 per core);
    the agent's I/O and kernel threads allocate little (Python objects come from
    pymalloc's own arenas), and their malloc arenas were ~2 MB of its 64-66 MB peak
    RSS in bench_agent (issue #12: <= 64 MB on small hosts). An operator's own
    ``MALLOC_ARENA_MAX`` wins; not glibc: nothing to do."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # M_ARENA_MAX in glibc's malloc.h
    return bool(mallopt(m_arena_max, limit))


def _agent(args: argparse.Namespace) -> int:
    from flk_fast.errors import ConfigError, FlkError
    from flk_fast.logs import trace_fatal_signals

    cap_malloc_arenas()
    trace_fatal_signals()  # an LMDB file damaged or truncated under it: SIGBUS
    try:
        _resolve(args)
    except ConfigError as exc:
        return fail(str(exc))
    _setup_logging(args.log_level, args.log_format)
    if args.input != "-" and not os.path.exists(args.input):
        return fail(f"--in {args.input}: no such file")
    if args.kernel_threads < 0:
        return fail("--kernel-threads must be >= 0")
    try:
        from flk_fast.agent.runner import AgentConfig
        from flk_fast.agent.summarize import max_abs_coordinate

        cfg = AgentConfig(
            endpoint=args.endpoint,
            shard_id=args.shard_id,
            data_dir=args.data_dir,
            window=args.window,
            window_seconds=args.window_seconds,
            start_epoch=args.start_epoch,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            policy=_policy(args),
            on_malformed=args.on_malformed,
            follow=args.follow,
            poll_s=args.poll,
            idle_flush_s=args.idle_flush,
            exit_when_drained=args.exit_when_drained,
            sync=not args.no_sync,
            max_inflight=args.max_inflight,
            compact_after_s=args.compact_after,
            source_id=args.source_id,
            restart_input=args.restart_input,
            progress=args.progress,
            workers=args.workers,
            compact_every_s=args.compact_every,
            redrive_max_wait_s=args.redrive_max_wait,
            tenant_id=args.tenant_id,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            metrics_textfile=args.metrics_textfile,
            metrics_every_s=args.metrics_every,
            tls_ca_file=args.tls_ca_file,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            # A custom summarizer may use other scales: it judges values itself.
            max_abs_coordinate=(
                None if args.summarizer else max_abs_coordinate(args.scales)
            ),
        )
        summarize = _summarizer(args)
        client = _client(args)
    except (FlkError, ValueError) as exc:
        return fail(str(exc) if isinstance(exc, ConfigError | FlkError) else f"{exc}")
    fmt = args.format
    if fmt == "auto":
        from flk_fast.agent.source import guess_format

        fmt = "csv" if args.input == "-" else guess_format(args.input)
    return asyncio.run(_agent_main(args, cfg, summarize, client, fmt))


async def _agent_main(
    args: argparse.Namespace, cfg: Any, summarize: Any, client: Any, fmt: str
) -> int:
    from flk_fast.agent.outbox import OutboxBusyError, OutboxDamagedError
    from flk_fast.agent.runner import Agent, install_signal_handlers
    from flk_fast.errors import FlkError, StorageError

    agent = Agent(cfg, summarize=summarize, client=client)
    interrupted = False

    async def run() -> None:
        async with agent:
            if args.input == "-":
                await agent.run_stdin(fmt=fmt)
            else:
                await agent.run_file(args.input, fmt=fmt)
            await agent.drain()

    task = asyncio.create_task(run())
    install_signal_handlers(task)
    code = EXIT_OK
    try:
        await task
    except asyncio.CancelledError:
        interrupted = True
        code = EXIT_INTERRUPTED
    except OutboxBusyError as exc:
        return fail(str(exc), EXIT_BUSY)
    except OutboxDamagedError as exc:
        code = fail(str(exc), EXIT_FAILED)
    except StorageError as exc:
        code = fail(_storage_message(exc, cfg.data_dir), EXIT_FAILED)
    except FlkError as exc:
        code = fail(str(exc), EXIT_USAGE)
    except (RuntimeError, OSError) as exc:
        # A bug or a failing disk: say so plainly, the outbox keeps what was made.
        code = fail(f"{exc}; pending PCS stay in the outbox", EXIT_FAILED)
    s = agent.summary
    line = (
        "flk agent: "
        + s.line()
        + (" (interrupted; pending PCS stay in the outbox)" if interrupted else "")
    )
    if args.exit_when_drained:
        print(line, flush=True)
    else:
        logging.getLogger("flk_fast.agent").info(line)
    if code == EXIT_OK and s.lost:
        code = EXIT_LOST
    elif code == EXIT_OK and s.in_dlq > 0:
        code = EXIT_DEAD
    return code


# ---------------------------------------------------------------------- outbox / dlq
def _open_outbox(args: argparse.Namespace, *, lock: bool) -> Any:
    from flk_fast.agent.outbox import Outbox
    from flk_fast.errors import ConfigError

    # Inspecting a mistyped directory must not create an empty outbox there.
    if not os.path.isdir(os.path.join(args.data_dir, "outbox")):
        raise ConfigError(f"--data-dir {args.data_dir}: no agent outbox there")
    return Outbox(args.data_dir, lock=lock)


def _usage(exc: BaseException) -> int:
    """Exit 2 for a usage error; storage errors go on to ``_outbox_command``."""
    from flk_fast.errors import StorageError

    if isinstance(exc, StorageError):
        raise exc
    return fail(str(exc))


def _outbox_command(fn: Any) -> Any:
    """Outbox/DLQ commands: a damaged or full outbox is a message and exit 4, never a
    traceback (the storage errors raised after the outbox opened)."""
    import functools

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from flk_fast.agent.outbox import OutboxBusyError, OutboxDamagedError
        from flk_fast.errors import StorageError

        try:
            return int(fn(args))
        except OutboxBusyError as exc:
            return fail(str(exc), EXIT_BUSY)
        except OutboxDamagedError as exc:
            return fail(str(exc), EXIT_FAILED)
        except StorageError as exc:
            return fail(_storage_message(exc, args.data_dir), EXIT_FAILED)

    return run


@_outbox_command
def _outbox_status(args: argparse.Namespace) -> int:
    import msgspec

    from flk_fast.errors import FlkError

    try:
        ob = _open_outbox(args, lock=False)
    except FlkError as exc:
        return _usage(exc)
    with ob:
        st = ob.status()
    doc = {
        "pending": st.pending,
        "acked": st.acked,
        "first_pending": st.first_pending,
        "dead_letters": st.dead_letters,
        "damaged": st.damaged,
        "lost": st.lost,
        "disk_bytes": st.disk_bytes,
        "epochs": st.epochs,
        "checkpoints": {k: msgspec.to_builtins(v) for k, v in st.checkpoints.items()},
    }
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return EXIT_OK
    print(
        f"pending {st.pending}  acked {st.acked}  dead letters {st.dead_letters}  "
        f"disk {st.disk_bytes / 1e6:.1f} MB"
    )
    if st.damaged:
        print(
            f"damaged {st.damaged}: pending records that cannot be read; the next "
            "'flk agent' run on their input summarises them again (or counts them lost)"
        )
    if st.lost:
        print(
            f"lost {st.lost}: damaged records whose windows could not be summarised "
            "again (dead letters, see 'flk dlq list')"
        )
    for shard, ep in sorted(st.epochs.items()):
        print(f"shard {shard}: next epoch {ep}")
    for src, ck in sorted(st.checkpoints.items()):
        print(
            f"input {src}: {ck.events} events in {ck.windows} windows, "
            f"line {ck.line}, byte {ck.offset}"
        )
    return EXIT_OK


async def _replay(
    args: argparse.Namespace, ob: Any, client: Any
) -> tuple[int, int, int]:
    """Send every pending record; returns (acked, escalated, dead).

    Streams the outbox 256 records at a time (a backlog can be far larger than
    memory), sends them ``--concurrency`` at a time, and runs every LMDB read and
    write (acks batched per chunk, fsynced) on one thread of its own, never on the
    event loop.
    """
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    from flk_fast.agent import delivery
    from flk_fast.protocol.codec import decode_pcs

    acked = escalated = dead = 0
    loop = asyncio.get_running_loop()
    io = ThreadPoolExecutor(1, thread_name_prefix="flk-replay-io")

    async def on_io(fn: Any, *a: Any, **kw: Any) -> Any:
        return await loop.run_in_executor(io, partial(fn, *a, **kw))

    def chunk(start: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for rec in ob.pending(start):
            out.append((rec.seq, rec.data))
            if len(out) == _REPLAY_CHUNK:
                break
        return out

    async def worker(
        client: Any, queue: list[tuple[int, bytes]], done: list[tuple[int, bytes]]
    ) -> None:
        nonlocal acked, escalated, dead
        while queue:
            seq, data = queue.pop()
            try:
                pcs = decode_pcs(data)
            except Exception as exc:  # noqa: BLE001
                await on_io(
                    ob.dead_letter,
                    seq,
                    data,
                    status=None,
                    reason=f"unreadable: {exc}",
                    attempts=0,
                )
                dead += 1
                continue
            res = await delivery.send(client, seq, pcs)
            if res.acked:
                done.append((seq, delivery.verdict(res)))
                acked += 1
                escalated += delivery.escalated(res)
            else:
                await on_io(delivery.dead_letter, ob, seq, data, pcs, res)
                dead += 1

    try:
        async with client:
            start = 0
            while batch := await on_io(chunk, start):
                start = batch[-1][0] + 1
                done: list[tuple[int, bytes]] = []
                queue = list(reversed(batch))
                await asyncio.gather(
                    *(worker(client, queue, done) for _ in range(args.concurrency))
                )
                if done:
                    await on_io(ob.ack_verdicts, done)
    finally:
        io.shutdown(wait=True)
    return acked, escalated, dead


@_outbox_command
def _outbox_replay(args: argparse.Namespace) -> int:
    from flk_fast.agent.outbox import OutboxBusyError
    from flk_fast.errors import FlkError

    _setup_logging("warning")
    try:
        client = _client(args)  # bad options fail before the outbox is locked
        with _open_outbox(args, lock=True) as ob:
            acked, esc, dead = asyncio.run(_replay(args, ob, client))
    except OutboxBusyError as exc:
        return fail(str(exc), EXIT_BUSY)
    except FlkError as exc:
        return _usage(exc)
    print(
        f"replayed {acked + dead}: acknowledged {acked} (escalated {esc}), "
        f"dead-lettered {dead}"
    )
    return EXIT_DEAD if dead else EXIT_OK


def _entry_doc(e: Any, *, pcs: bool) -> dict[str, Any]:
    import datetime

    doc: dict[str, Any] = {
        "seq": e.seq,
        "state": e.state,
        "appended_at": datetime.datetime.fromtimestamp(
            e.appended_at, datetime.UTC
        ).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "shard_id": e.shard_id,
        "epoch": e.epoch,
        "pcs_id": e.pcs_id,
        "verdict": e.verdict,
    }
    if pcs:
        try:
            doc["pcs"] = json.loads(e.body)
        except ValueError:
            doc["pcs"] = e.body.decode("utf-8", "replace")
    return doc


def _verdict_text(e: Any) -> str:
    """``accepted``, ``escalated: REASON``; ``-`` pending; ``unknown`` for a record
    acknowledged by an agent that kept no verdict."""
    if e.state != "acked":
        return "-"
    v = e.verdict or {}
    word = v.get("verdict")
    if not isinstance(word, str):
        return "unknown"
    reason = v.get("reason")
    return f"{word}: {reason}" if isinstance(reason, str) and reason else word


@_outbox_command
def _outbox_list(args: argparse.Namespace) -> int:
    from flk_fast.errors import FlkError

    if args.acked < 0:
        return fail("--acked must be >= 0")
    try:
        ob = _open_outbox(args, lock=False)
    except FlkError as exc:
        return _usage(exc)
    with ob:
        entries = ob.entries(acked=args.acked)
    for e in entries:
        doc = _entry_doc(e, pcs=False)
        if args.json:
            print(json.dumps(doc, sort_keys=True))
        else:
            print(
                f"{e.seq}\t{e.state}\t{doc['appended_at']}\tshard={e.shard_id}\t"
                f"epoch={e.epoch}\tpcs_id={e.pcs_id[:16] or '(unreadable)'}\t"
                f"verdict={_verdict_text(e)}"
            )
    if not args.json:
        pending = sum(e.state == "pending" for e in entries)
        print(f"{pending} pending, {len(entries) - pending} acked shown",
              file=sys.stderr)  # fmt: skip
    return EXIT_OK


@_outbox_command
def _outbox_show(args: argparse.Namespace) -> int:
    from flk_fast.errors import FlkError

    try:
        ob = _open_outbox(args, lock=False)
    except FlkError as exc:
        return _usage(exc)
    with ob:
        e = ob.entry(args.seq)
    if e is None:
        return fail(
            f"no outbox record {args.seq} in {args.data_dir} (compacted, or never "
            "made; 'flk outbox list' shows the seqs)"
        )
    doc = _entry_doc(e, pcs=True)
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        for key in ("seq", "state", "appended_at", "shard_id", "epoch", "pcs_id"):
            print(f"{key}: {doc[key]}")
        status = (e.verdict or {}).get("status")
        print(f"verdict: {_verdict_text(e)}" + (f" (HTTP {status})" if status else ""))
        print(json.dumps(doc["pcs"], indent=2, sort_keys=True))
    return EXIT_OK


@_outbox_command
def _outbox_compact(args: argparse.Namespace) -> int:
    from flk_fast.errors import FlkError

    try:
        ob = _open_outbox(args, lock=False)
    except FlkError as exc:
        return _usage(exc)
    with ob:
        n_out, n_dlq = ob.compact(args.older_than)
    print(
        f"removed {n_out} acknowledged outbox records and {n_dlq} dropped dead letters"
    )
    return EXIT_OK


@_outbox_command
def _dlq_list(args: argparse.Namespace) -> int:
    import msgspec

    from flk_fast.errors import FlkError

    try:
        ob = _open_outbox(args, lock=False)
    except FlkError as exc:
        return _usage(exc)
    with ob:
        letters = ob.dead_letters()
    for d in letters:
        if args.json:
            # The letter's JSON already embeds the PCS as an object (msgspec.Raw).
            print(msgspec.json.encode(d).decode())
        else:
            status = "-" if d.status is None else str(d.status)
            print(
                f"{d.dlq_seq}\tshard={d.shard_id}\tepoch={d.epoch}\tstatus={status}\t"
                f"attempts={d.attempts}\ttransient={'yes' if d.transient else 'no'}\t"
                f"pcs_id={d.pcs_id[:16]}\t{d.reason}"
            )
    if not args.json:
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return EXIT_OK


def _chosen(args: argparse.Namespace) -> list[int] | None:
    if args.all and args.seqs:
        raise ValueError("give SEQ numbers or --all, not both")
    if not args.all and not args.seqs:
        raise ValueError("give SEQ numbers or --all")
    return None if args.all else list(args.seqs)


@_outbox_command
def _dlq_retry(args: argparse.Namespace) -> int:
    from flk_fast.agent.outbox import OutboxBusyError
    from flk_fast.errors import FlkError

    try:
        seqs = _chosen(args)
        # Bad delivery options (a TLS file, the URL) fail before anything is requeued.
        client = _client(args) if args.endpoint else None
        with _open_outbox(args, lock=True) as ob:
            new = ob.dlq_retry(seqs)
            print(f"requeued {len(new)} PCS into the outbox")
            if client is not None:
                acked, esc, dead = asyncio.run(_replay(args, ob, client))
                print(
                    f"sent {acked + dead}: acknowledged {acked} (escalated {esc}), "
                    f"dead-lettered {dead}"
                )
                return EXIT_DEAD if dead else EXIT_OK
    except OutboxBusyError as exc:
        return fail(str(exc), EXIT_BUSY)
    except (FlkError, ValueError) as exc:
        return _usage(exc)
    return EXIT_OK


@_outbox_command
def _dlq_drop(args: argparse.Namespace) -> int:
    from flk_fast.errors import FlkError

    try:
        seqs = _chosen(args)
        with _open_outbox(args, lock=False) as ob:
            n = ob.dlq_drop(seqs)
    except (FlkError, ValueError) as exc:
        return _usage(exc)
    print(f"dropped {n} dead letter(s)")
    return EXIT_OK
