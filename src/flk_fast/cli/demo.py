"""``flk demo``: the main job end to end on the embedded default (LMDB).

It makes a key and a stream of events, starts ``flk serve`` on LMDB, runs ``flk agent``
over the stream until every PCS is acknowledged, and prints what the server accepted
and escalated. Both halves are the real commands in their own processes, exactly as a
user would run them.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from flk_fast.cli._common import add_command, fail

__all__ = ["register", "write_events"]


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "demo",
        help="run the main job: flk serve on LMDB plus an flk agent feeding it a "
        "generated event stream; prints what was accepted and escalated",
        examples="""\
  flk demo                                  # 200 000 events, windows of 10 000
  flk demo --events 1000000 --dir /tmp/flk-demo --keep""",
    )
    p.add_argument("--events", type=int, default=200_000, help="events to generate")
    p.add_argument("--window", type=int, default=10_000, help="events per PCS")
    p.add_argument("--dir", default="demo-data", help="working directory (demo-data)")
    p.add_argument("--port", type=int, default=0, help="server port (0 = a free one)")
    p.add_argument("--seed", type=int, default=7, help="event generator seed")
    p.add_argument(
        "--keep",
        action="store_true",
        help="reuse the server and agent data an earlier run left in --dir instead "
        "of starting fresh (the agent resumes after its checkpoint: nothing new "
        "is sent for the same events); without it both are wiped first",
    )
    p.set_defaults(func=_demo)


def write_events(path: Path, n: int, seed: int, block: int = 10_000) -> None:
    """Write ``n`` CSV events (``timestamp,x,y,z``) whose structure changes per block:
    a drifting line (coherent, low D̂), a noisy plane and a uniform cloud, so the
    windows fall into different regimes. Streams block by block (bounded memory)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("timestamp,x,y,z\n")
        for start in range(0, n, block):
            m = min(block, n - start)
            kind = (start // block) % 3
            if kind == 0:
                u = rng.random(m)[:, None]
                pts = (
                    0.1
                    + 0.8 * u * np.array([1.0, 0.6, 0.3])
                    + rng.normal(0, 0.002, (m, 3))
                )
            elif kind == 1:
                pts = np.column_stack(
                    [rng.random(m), rng.random(m), 0.5 + rng.normal(0, 0.01, m)]
                )
            else:
                pts = rng.random((m, 3))
            pts = np.clip(pts, 0.0, 0.999999)
            t = (start + np.arange(m)) * 0.001
            rows = (
                f"{ti:.3f},{x:.6f},{y:.6f},{z:.6f}"
                for ti, (x, y, z) in zip(t.tolist(), pts.tolist(), strict=True)
            )
            f.write("\n".join(rows) + "\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


def _metric(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


def _demo(args: argparse.Namespace) -> int:
    work = Path(args.dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    key = work / "hmac.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32) + "\n")
        key.chmod(0o600)
    events = work / "events.csv"
    t0 = time.perf_counter()
    write_events(events, args.events, args.seed)
    took = time.perf_counter() - t0
    print(f"demo: wrote {args.events:,} events to {events} ({took:.1f}s)")

    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    server_dir, agent_dir = work / "server", work / "agent"
    if not args.keep:
        import shutil

        shutil.rmtree(server_dir, ignore_errors=True)
        shutil.rmtree(agent_dir, ignore_errors=True)
    flk = [sys.executable, "-m", "flk_fast"]
    log = open(work / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [
            *flk,
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(server_dir),
            "--hmac-key-file",
            str(key),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while _get(url + "/ready")[0] != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                return fail(
                    f"flk serve did not become ready; see {work / 'server.log'}"
                )
            time.sleep(0.1)
        print(f"demo: flk serve ready on {url} (LMDB in {server_dir})")
        agent = subprocess.run(
            [
                *flk,
                "agent",
                "--endpoint",
                url,
                "--in",
                str(events),
                "--shard-id",
                "demo",
                "--window",
                str(args.window),
                "--data-dir",
                str(agent_dir),
                "--hmac-key-file",
                str(key),
                "--exit-when-drained",
            ],
            check=False,
        )
        _, metrics = _get(url + "/metrics")
        ingested = _metric(metrics, "flk_ingest_total")
        accepted = _metric(metrics, "flk_accepted_total")
        escalated = _metric(metrics, "flk_escalated_total")
        print(f"demo: server ingested={ingested} accepted={accepted} ", end="")
        print(f"escalated={escalated}")
        if agent.returncode == 0:
            _show_escalation(url, key, agent_dir)
            _show_where(work, server_dir, agent_dir)
        return agent.returncode
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if os.environ.get("FLK_DEMO_SHOW_LOG"):
            print((work / "server.log").read_text())


def _show_escalation(url: str, key: Path, agent_dir: Path) -> None:
    """Send one PCS whose claimed D̂ is off by 0.5 (correctly signed, so it is judged,
    SPEC §6 step 3) and print the server's answer: what an escalation looks like."""
    import json

    import msgspec

    from flk_fast.agent.outbox import Outbox
    from flk_fast.protocol.codec import decode_pcs, encode_pcs
    from flk_fast.protocol.pcs import compute_pcs_id
    from flk_fast.protocol.signing import HmacSigner, load_hmac_key

    with Outbox(agent_dir) as ob:
        entries = ob.entries(acked=1)
    if not entries:
        return
    pcs = decode_pcs(entries[-1].body)
    epoch = pcs.epoch + 1_000_000  # an epoch of its own: no real window is touched
    bad = msgspec.structs.replace(
        pcs,
        epoch=epoch,
        pcs_id=compute_pcs_id(pcs.merkle_root, epoch, pcs.shard_id),
        D_hat=round(pcs.D_hat + 0.5, 9),
        sig="",
    )
    bad = msgspec.structs.replace(
        bad, sig=HmacSigner(load_hmac_key(path=key)).sign(bad)
    )
    req = urllib.request.Request(
        url + "/v1/pcs/submit",
        data=encode_pcs(bad),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, verdict = r.status, json.loads(r.read())
    except (OSError, ValueError) as exc:
        print(f"demo: the escalation example could not be sent: {exc}")
        return
    print(
        f"demo: an escalation, on purpose: a PCS claiming D_hat={bad.D_hat:.3f} for "
        f"a window whose N_j give {verdict.get('recomputed_D_hat', 0):.3f} got HTTP "
        f"{status} accepted={verdict.get('accepted')} "
        f"escalated={verdict.get('escalated')} reason={verdict.get('reason')!r}"
    )


def _show_where(work: Path, server_dir: Path, agent_dir: Path) -> None:
    print(
        f"demo: the data stays in {work}: events.csv (the input), {server_dir.name}/ "
        f"(the server's inbox WAL and verdicts, LMDB), {agent_dir.name}/ (the agent's "
        "outbox, dead-letter queue and checkpoint)\n"
        "demo: look at it with\n"
        f"  flk outbox status --data-dir {agent_dir}\n"
        f"  flk outbox list --data-dir {agent_dir}\n"
        f"  flk outbox show --data-dir {agent_dir} 1\n"
        f"  flk dlq list --data-dir {agent_dir}\n"
        f"demo: run it again with --keep to reuse this data, or delete {work}"
    )
