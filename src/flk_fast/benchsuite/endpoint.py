"""An HTTP endpoint of known behaviour, to check a load generator against: answers
every POST after a fixed delay, stalls its whole event loop for a while once per
period, answers 503 to a fixed share of requests. Used by the tests of ``flk bench``
and by ``bench/bench_loadgen.py`` (the echo endpoint); a user can run it to see what
the generator gives on their own machine::

    python -m flk_fast.benchsuite.endpoint --port 8099 --delay 5ms

It prints ``listening on http://127.0.0.1:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence

from aiohttp import web

from flk_fast.benchsuite.load import sleep_until
from flk_fast.benchsuite.options import parse_duration

_OK = b'{"accepted":true,"escalated":false}'
_ESCALATED = b'{"accepted":true,"escalated":true}'
_BUSY = b'{"error":"overloaded"}'


def spawn(
    *args: str, prefix: Sequence[str] = (), cwd: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start the endpoint in a child process (``prefix``: e.g. ``taskset -c 1``);
    the process and its base URL once it listens. The caller stops the process."""
    cmd = [*prefix, sys.executable, "-m", "flk_fast.benchsuite.endpoint", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=cwd)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the endpoint did not start: {line!r}")
    return proc, line.split()[-1]


def make_app(
    delay_s: float = 0.0,
    stall_s: float = 0.0,
    stall_every_s: float = 1.0,
    fail_ratio: float = 0.0,
    escalate_ratio: float = 0.0,
) -> web.Application:
    """The endpoint. Failures and escalations are spread evenly (request k fails when
    ``floor(k * ratio)`` steps), so a share is exact rather than random."""
    state = {"n": 0, "next_stall": time.monotonic() + stall_every_s}

    def steps(n: int, ratio: float) -> bool:
        return int(n * ratio) != int((n - 1) * ratio)

    async def submit(request: web.Request) -> web.Response:
        due = time.perf_counter() + delay_s
        await request.read()
        state["n"] += 1
        n = int(state["n"])
        if stall_s and time.monotonic() >= state["next_stall"]:
            state["next_stall"] += stall_every_s
            time.sleep(stall_s)  # blocks the loop on purpose: every request waits
        if delay_s:
            await sleep_until(due)
        if steps(n, fail_ratio):
            return web.Response(status=503, body=_BUSY, content_type="application/json")
        if steps(n, escalate_ratio):
            return web.Response(
                status=202, body=_ESCALATED, content_type="application/json"
            )
        return web.Response(body=_OK, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/pcs/submit", submit)
    return app


class _Echo(asyncio.Protocol):
    """``--echo``: 200 to every request, no framework (httptools parses requests), so
    the endpoint outruns the generator it is used to measure."""

    _ANSWER = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_OK), _OK)
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import httptools

        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # noqa: BLE001 - any parse error: drop the connection
            self.transport.abort()

    def on_message_complete(self) -> None:
        self.transport.write(self._ANSWER)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (0)")
    ap.add_argument("--delay", default="0ms", help="before every answer (0ms)")
    ap.add_argument("--stall", default="0ms", help="loop stall once per period (0ms)")
    ap.add_argument("--stall-every", default="1s", help="stall period (1s)")
    ap.add_argument("--fail-ratio", type=float, default=0.0, help="503 share (0)")
    ap.add_argument("--escalate-ratio", type=float, default=0.0, help="202 share (0)")
    ap.add_argument(
        "--echo", action="store_true", help="fastest: 200 to everything, no options"
    )
    args = ap.parse_args(argv)

    def dur(text: str) -> float:
        return 0.0 if text in ("0", "0ms", "0s") else parse_duration(text)

    app = make_app(
        dur(args.delay),
        dur(args.stall),
        parse_duration(args.stall_every),
        args.fail_ratio,
        args.escalate_ratio,
    )

    async def echo() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Echo, "127.0.0.1", args.port)
        print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        sys.stdout.flush()
        await server.serve_forever()

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    from flk_fast.benchsuite.runner import run_loop

    try:
        run_loop(echo() if args.echo else serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
