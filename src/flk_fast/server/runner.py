"""Run the server: uvloop, signals, TLS, the ready line, and ``--workers N``.

One worker is one process with one event loop. ``--workers N`` starts N spawned worker
processes that each bind the same port with ``SO_REUSEPORT`` (the kernel spreads
connections over them); the supervisor holds one bound-but-not-listening socket on that
port first, so ``--port 0`` still gives every worker the same port. Workers share the
dedup store (one LMDB environment, or Redis/PostgreSQL) and write Prometheus values to a
shared multiprocess directory; each has its own inbox WAL (``DATA_DIR/inbox/w<i>``), so
a worker's replay never races another worker's live requests.

Signals: SIGTERM/SIGINT drain (stop accepting, finish in-flight requests up to
``drain_timeout_s``, flush acks, close stores); SIGHUP reloads the keys. The supervisor
forwards both and restarts a worker that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .config import ServerConfig

__all__ = ["configure_logging", "serve", "ssl_context"]

#: A worker that dies this many times in a row without getting ready stops the group.
_MAX_START_FAILURES = 5
#: Seconds the supervisor allows a worker beyond drain_timeout_s to close its stores.
_STOP_GRACE_S = 10.0
#: Seconds an idle keep-alive connection stays open.
#: Allocations between two young-generation collections (CPython's default is 700).
#: A request allocates hundreds of tracked objects, so the default collected every few
#: requests; 20 000 measured +4-18 % req/s at saturation (bench_server).
GC_GEN0_THRESHOLD = 20_000

log = logging.getLogger("flk_fast.server")


_hup_pending = False


def _remember_hup(signum: int, frame: Any) -> None:
    global _hup_pending
    _hup_pending = True


def hold_sighup() -> None:
    """Until the event loop installs the key-reload handler, a SIGHUP (whose default
    action ends the process) is only remembered; the reload then runs once."""
    signal.signal(signal.SIGHUP, _remember_hup)


def configure_logging(level: str) -> None:
    """JSON lines on stderr for every logger of the process (and a stack trace
    there if a fatal signal kills it)."""
    from flk_fast.logs import trace_fatal_signals

    from .middleware import JsonFormatter

    trace_fatal_signals()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def ssl_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    if not cfg.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    if cfg.tls_client_ca:
        ctx.load_verify_locations(cfg.tls_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _warm_up() -> None:
    """Compile/load the kernels before the first request pays for it."""
    kernels = importlib.import_module("flk_fast.kernels")
    fn = getattr(kernels, "warm_up", None)
    if callable(fn):
        try:
            fn()
        except ImportError as exc:
            # The ingest path needs none of the compiled kernels (SPEC §6 recomputes
            # D-hat from a handful of scales), so a pure build still serves; say so.
            log.warning("kernels not warmed up: %s", exc)


def _hide_server_software() -> None:
    """aiohttp stamps ``Server: Python/3.x aiohttp/3.y`` on every response without a
    Server header, also on the 400s its HTTP parser answers by itself, which no app
    hook sees (``make_app``'s ``on_response_prepare`` covers the app's own). The
    value is a module global read at each response, and this process serves only
    this app, so it is set once here, like the loop policy."""
    from aiohttp import web_response

    from .app import SERVER_HEADER

    web_response.SERVER_SOFTWARE = SERVER_HEADER


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # Windows: no uvloop, plain asyncio still works
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(cfg: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code.

    Raises
    ------
    OSError
        The data directory is locked by another ``flk serve``, or the port is taken.
    """
    hold_sighup()
    configure_logging(cfg.log_level)
    lock = lock_data_dir(cfg.data_dir)
    try:
        if cfg.workers > 1:
            return _supervise(cfg)
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            return runner.run(_serve(cfg, 0, 1, reuse_port=False, ready_conn=None))
    finally:
        lock.close()


def lock_data_dir(data_dir: str) -> Any:
    """Take an exclusive ``flock`` on ``DATA_DIR/serve.lock`` for the life of the
    process (the supervisor's, with ``--workers``): two servers on one data directory
    would replay each other's inbox WALs and clear each other's metrics directory.

    Returns the open lock file (closing it releases the lock).

    Raises
    ------
    OSError
        Another process holds the lock; the message names the directory and its pid.
    """
    import fcntl

    path = Path(data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        f = open(path / "serve.lock", "a+")  # noqa: SIM115 - held until serve() returns
    except OSError as exc:
        raise option_error("--data-dir", data_dir, exc) from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise OSError(
            f"data dir {path} is in use by another flk serve (pid {holder})"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def option_error(flag: str, value: object, exc: OSError) -> OSError:
    """``exc`` (from creating the data directory, or binding) restated as a fault of
    the option that caused it, e.g. ``--data-dir afile: is a file`` or ``--host
    10.0.0.999: not an address``; the OS's words follow in parentheses."""
    code = exc.errno
    # os.strerror: aiohttp's bind error carries a long strerror of its own.
    why = os.strerror(code) if isinstance(code, int) and code > 0 else ""
    why = why or exc.strerror or str(exc)
    if flag == "--data-dir":
        p = Path(str(value))
        if p.exists() and not p.is_dir():
            what = "is a file"
        elif code == errno.ENOTDIR or any(
            q.exists() and not q.is_dir() for q in p.parents
        ):
            what = "a parent of it is a file"
        elif code in (errno.EACCES, errno.EPERM):
            what = "permission denied"
        elif code in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left on the device"
        elif code == errno.EROFS:
            what = "read-only file system"
        else:
            what = why
    elif flag == "--host":
        if isinstance(exc, socket.gaierror):
            what = f"not an address ({why})"
        elif code == errno.EADDRNOTAVAIL:
            what = f"not an address of this machine ({why})"
        else:
            what = why
    elif flag == "--port":
        if code == errno.EADDRINUSE:
            what = "in use"
        elif code in (errno.EACCES, errno.EPERM):
            what = "permission denied (ports below 1024 need privileges)"
        else:
            what = why
    else:
        what = why
    if why.lower() not in what.lower():
        what = f"{what} ({why})"
    return _StartError(f"{flag} {value}: {what}", code)


class _StartError(OSError):
    """An ``OSError`` whose text is only its message (no ``[Errno N]`` prefix): the
    CLI prints it after "cannot start: "."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


def _bind_error(host: str, port: int, exc: OSError) -> OSError:
    if isinstance(exc, _StartError):
        return exc
    if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EPERM):
        return option_error("--port", f"{port} on {host}", exc)
    return option_error("--host", host, exc)


def _check_port_free(host: str, port: int, family: int) -> None:
    """Bind once *without* SO_REUSEPORT: if another server (e.g. another
    ``--workers`` group, whose sockets all set SO_REUSEPORT) listens on the port this
    fails, where a SO_REUSEPORT bind would silently share the port with it."""
    if port == 0:
        return
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is ok
        probe.bind((host, port))
    except OSError as exc:
        raise _bind_error(host, port, exc) from None
    finally:
        probe.close()


async def _serve(
    cfg: ServerConfig,
    index: int,
    workers: int,
    *,
    reuse_port: bool,
    ready_conn: Connection | None,
    listen_when_ready: bool = False,
) -> int:
    """Serve one process of the group until SIGTERM.

    ``listen_when_ready``: take connections only once the start-up replay is done.
    For a worker that replaces a dead one: the others serve meanwhile, so the kernel
    must not hand it connections that could only get a 503. A first start listens at
    once, so that ``/health`` and ``/ready`` answer while it loads.
    """
    from aiohttp import web

    from .app import SERVICE, make_app

    _warm_up()
    _hide_server_software()
    app = make_app(cfg, worker_index=index, num_workers=workers)
    service = app[SERVICE]
    # Everything alive now (modules, app, keys) lives as long as the process: keep it
    # out of the cyclic GC's generations so full collections under load stay short.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=cfg.drain_timeout_s,
        # aiohttp's default (3630 s) lets idle connections pile up; the default 75 s
        # outlives the usual load balancer idle timeout (60 s), so the balancer closes.
        keepalive_timeout=cfg.keepalive_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        cfg.host,
        cfg.port,
        ssl_context=ssl_context(cfg),
        reuse_port=reuse_port or None,
        backlog=2048,
    )
    if not listen_when_ready:
        await _start_site(runner, site, cfg)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload_keys() -> None:
        try:
            service.keys.reload()
        except Exception as exc:  # keep serving with the old keys
            log.error("key reload failed, old keys kept: %s", exc)
        else:
            log.info("keys reloaded", extra={"tenants": len(service.keys.tenant_names)})

    loop.add_signal_handler(signal.SIGHUP, reload_keys)
    if _hup_pending:  # asked for during start-up: the keys may have changed since
        reload_keys()

    while not service.ready and not stop.is_set() and not service.fatal:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
    if service.fatal:
        for s in list(runner.sites):
            await s.stop()
        await runner.cleanup()
        log.error(
            "stopped: start-up failed",
            extra={"event": "stopped", "pid": os.getpid(), "reason": service.fatal},
        )
        return 1
    if not stop.is_set():
        if listen_when_ready:
            await _start_site(runner, site, cfg)
        port = _bound_port(runner) or cfg.port
        info = {
            "host": cfg.host,
            "port": port,
            "pid": os.getpid(),
            "tls": bool(cfg.tls_cert),
            "replayed": service.replayed_at_start,
        }
        if ready_conn is not None:
            ready_conn.send(("ready", info))
        else:
            scheme = "https" if cfg.tls_cert else "http"
            log.info(
                f"flk serve ready on {scheme}://{cfg.host}:{port}",
                extra={"event": "ready", **info, "workers": 1, "config": cfg.public()},
            )
    await stop.wait()
    log.info("draining", extra={"event": "draining", "pid": os.getpid()})
    # Stop listening, then wait for in-flight submissions ourselves: aiohttp's own
    # shutdown stops reading from connections at once, so a request whose body is still
    # arriving would never complete. Only then does AppRunner.cleanup close idle
    # connections and run the app's cleanup context (last acks, close stores).
    #
    # One deadline for all of it: our drain, aiohttp's shutdown of what is left and the
    # app's cleanup (last acks) share --drain-timeout-s instead of each taking it anew.
    deadline = time.monotonic() + cfg.drain_timeout_s
    service.draining = True
    service.drain_deadline = deadline
    for s in list(runner.sites):
        await s.stop()
    await service.drain(cfg.drain_timeout_s)
    # aiohttp reads its shutdown timeout from this attribute at cleanup time.
    runner._shutdown_timeout = max(0.1, deadline - time.monotonic())
    await runner.cleanup()
    log.info("stopped", extra={"event": "stopped", "pid": os.getpid()})
    return 0


async def _start_site(runner: Any, site: Any, cfg: ServerConfig) -> None:
    """Listen; a bind failure names the option at fault (after the app, whose
    start-up already opened the stores, is cleaned up)."""
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise _bind_error(cfg.host, cfg.port, exc) from None


def _bound_port(runner: Any) -> int | None:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return None


# --------------------------------------------------------------------- workers
def _worker_main(
    cfg: ServerConfig, index: int, workers: int, conn: Connection, restart: bool
) -> None:
    hold_sighup()  # the supervisor forwards SIGHUP, maybe while this one starts
    configure_logging(cfg.log_level)
    # The supervisor handles Ctrl-C for the group; a worker stops on SIGTERM only.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        code = runner.run(
            _serve(
                cfg,
                index,
                workers,
                reuse_port=True,
                ready_conn=conn,
                listen_when_ready=restart,
            )
        )
    sys.exit(code)


def _supervise(cfg: ServerConfig) -> int:
    mp_dir = Path(cfg.data_dir).resolve() / "prometheus-mp"
    # Stale files of a previous run would be summed into this run's counters.
    shutil.rmtree(mp_dir, ignore_errors=True)
    mp_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mp_dir)

    # Reserve the port (and learn it, for --port 0): bound with SO_REUSEPORT but never
    # listening, so the kernel hands connections only to the workers.
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    _check_port_free(cfg.host, cfg.port, family)
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((cfg.host, cfg.port))
    except OSError as exc:
        holder.close()
        raise _bind_error(cfg.host, cfg.port, exc) from None
    port = holder.getsockname()[1]
    wcfg = cfg.replace(port=port)

    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, Any] = {}
    conns: dict[int, Connection] = {}

    def start(i: int) -> None:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(
            target=_worker_main,
            args=(wcfg, i, cfg.workers, child, i in procs),
            name=f"flk-worker-{i}",
            daemon=False,
        )
        p.start()
        child.close()
        procs[i], conns[i] = p, parent

    stopping = False
    hup = False
    exit_code = 0
    restart_at: dict[int, float] = {}  # worker index -> when to start it again
    failures: dict[int, int] = {}  # consecutive deaths before reaching ready
    ever_ready: set[int] = set()

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, frame: Any) -> None:
        nonlocal hup
        hup = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    for i in range(cfg.workers):
        start(i)
    ready: set[int] = set()
    announced = False
    while not stopping:
        for i, conn in list(conns.items()):
            with contextlib.suppress(EOFError, OSError):
                while conn.poll():
                    msg = conn.recv()
                    if msg[0] == "ready":
                        ready.add(i)
                        ever_ready.add(i)
        if not announced and len(ready) == cfg.workers:
            scheme = "https" if cfg.tls_cert else "http"
            log.info(
                f"flk serve ready on {scheme}://{cfg.host}:{port}",
                extra={
                    "event": "ready",
                    "host": cfg.host,
                    "port": port,
                    "pid": os.getpid(),
                    "workers": cfg.workers,
                    "config": cfg.public(),
                },
            )
            announced = True
        if hup:
            hup = False
            for p in procs.values():
                if p.is_alive() and p.pid:
                    os.kill(p.pid, signal.SIGHUP)
        for i, p in list(procs.items()):
            if p.is_alive() or stopping or time.monotonic() < restart_at.get(i, 0.0):
                continue
            if restart_at.get(i) is None:  # just noticed: schedule with backoff
                _mark_dead(p.pid)
                ready.discard(i)
                failures[i] = 0 if i in ever_ready else failures.get(i, 0) + 1
                ever_ready.discard(i)
                if failures[i] >= _MAX_START_FAILURES:
                    log.error(
                        "worker %d failed to start %d times; giving up", i, failures[i]
                    )
                    stopping, exit_code = True, 1
                    break
                delay = min(5.0, 0.1 * 2 ** failures[i])
                log.error(
                    "worker %d (pid %s) exited with %s; restarting in %.1f s",
                    i,
                    p.pid,
                    p.exitcode,
                    delay,
                )
                restart_at[i] = time.monotonic() + delay
                continue
            del restart_at[i]
            start(i)
        time.sleep(0.05)

    for p in procs.values():
        if p.is_alive() and p.pid:
            os.kill(p.pid, signal.SIGTERM)
    # A worker drains within drain_timeout_s, then flushes acks and closes its stores;
    # _STOP_GRACE_S covers the latter. One that is still alive after that is killed,
    # and the group's exit code says so.
    deadline = time.monotonic() + cfg.drain_timeout_s + _STOP_GRACE_S
    for p in procs.values():
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            log.error("worker pid %s did not stop in time; killing", p.pid)
            p.kill()
            p.join()
            exit_code = exit_code or 1
        elif p.exitcode not in (0, None):
            exit_code = exit_code or 1
        _mark_dead(p.pid)
    holder.close()
    log.info("stopped", extra={"event": "stopped", "pid": os.getpid()})
    return exit_code


def _mark_dead(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(Exception):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
