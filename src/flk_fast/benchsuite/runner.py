"""Runs of the load engine as ``flk bench load`` and ``flk bench slo`` make them: the
load options resolved (flag, then SLO file, then default), one pool and one body
source for all the rates of a run, progress, and the ramp.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from flk_fast.benchsuite.load import LoadPlan, RateResult, run_rate
from flk_fast.benchsuite.options import LOAD_OPTIONS
from flk_fast.benchsuite.slo import Objective
from flk_fast.errors import ConfigError

__all__ = [
    "Progress",
    "load_config",
    "make_plans",
    "ramp",
    "run_loop",
    "run_plans",
]


#: Bodies of one rate are held in memory: 2 M x ~0.8 KB is ~1.6 GB.
MAX_REQUESTS_PER_RATE = 2_000_000
_BY_NAME = {o.name: o for o in LOAD_OPTIONS}
_PATHS = ("hmac_key_file", "ed25519_key_file", "tls_ca_file", "tls_cert", "tls_key")
#: ``[load]`` keys of older releases -> their names now (refused, naming the new one,
#: like the flags ``--key-file`` and ``--key``: one spelling of each option).
_RENAMED = {"key_file": "hmac_key_file"}
_KEYS = ("hmac_key_file", "hmac_key_env", "ed25519_key_file")


def load_config(
    flags: dict[str, Any], table: dict[str, Any] | None = None, base: Path | None = None
) -> dict[str, Any]:
    """The load options: a flag given on the command line (not None) wins over the SLO
    file's ``[load]`` ``table``, which wins over the default. Paths in the file are
    relative to its folder ``base``."""
    table = table or {}
    out: dict[str, Any] = {}
    for key in table:
        if key in _RENAMED:
            raise ConfigError(f"[load] {key}: renamed; write {_RENAMED[key]}")
        if key not in _BY_NAME:
            raise ConfigError(
                f"[load] {key}: unknown key; use {', '.join(sorted(_BY_NAME))}"
            )
    for opt in LOAD_OPTIONS:
        value = flags.get(opt.name)
        if value is None and opt.name in table:
            raw = table[opt.name]
            try:
                value = opt.parse(str(raw))
            except (ValueError, ConfigError) as exc:
                raise ConfigError(f"[load] {opt.name}: {exc}") from None
            if opt.name in _PATHS and base is not None:
                value = str(base / value)
        out[opt.name] = opt.default if value is None else value
    if all(out[k] is None for k in _KEYS):
        raise ConfigError(
            "no signing key: give --hmac-key-file, --hmac-key-env or "
            "--ed25519-key-file (or hmac_key_file in the SLO file's [load] table)"
        )
    return out


class Progress:
    """A bar on a terminal, a log line every 5 s otherwise (CI logs stay short)."""

    def __init__(self, total_s: float, stream: TextIO | None = None) -> None:
        self.total_s = total_s
        self.done_s = 0.0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_log = -5.0

    def tick(self, label: str, elapsed: float) -> None:
        done = min(self.total_s, self.done_s + elapsed)
        share = done / self.total_s if self.total_s else 1.0
        if self.tty:
            bar = "#" * round(30 * share)
            self.stream.write(f"\r[{bar:<30}] {share:4.0%} {label}  ")
            self.stream.flush()
        elif done - self._last_log >= 5.0:
            self._last_log = done
            print(f"flk bench: {share:4.0%} {label}", file=self.stream, flush=True)

    def note(self, line: str) -> None:
        print(f"flk bench: {line}", file=self.stream, flush=True)

    def finish_rate(self, duration_s: float, line: str) -> None:
        self.done_s += duration_s
        if self.tty:
            self.stream.write("\r" + " " * 60 + "\r")
        print(f"flk bench: {line}", file=self.stream, flush=True)


async def _run_all(
    url: str,
    plans: Sequence[LoadPlan],
    cfg: dict[str, Any],
    progress: Progress | None,
    stop: Callable[[RateResult], bool],
) -> list[RateResult]:
    from flk_fast.agent.client import tls_context
    from flk_fast.benchsuite.bodies import BodySource, load_signer
    from flk_fast.benchsuite.http import HttpPool, RequestFailed

    signer = load_signer(
        cfg["hmac_key_file"], cfg["ed25519_key_file"], cfg["hmac_key_env"]
    )
    bodies = BodySource(
        signer,
        shard_id=cfg["shard_id"],
        resend_ratio=cfg["resend_ratio"],
        version=cfg["sig_version"],
    )
    headers = {"X-Tenant-Id": cfg["tenant"]} if cfg["tenant"] else None
    pool = HttpPool(
        url,
        connections=cfg["connections"],
        headers=headers,
        ssl_context=tls_context(cfg["tls_ca_file"], cfg["tls_cert"], cfg["tls_key"]),
    )
    results = []
    try:
        try:
            await pool.connect(min(cfg["connections"], 16))
        except RequestFailed as exc:
            raise ConfigError(
                f"cannot reach {url} ({exc}): is the server up and the URL right?"
            ) from None
        for plan in plans:
            label = f"{plan.rate:g} req/s"

            def tick(elapsed: float, label: str = label) -> None:
                if progress is not None:
                    progress.tick(label, elapsed)

            if progress is not None:
                progress.note(f"{label}: signing {plan.requests} bodies")
            signed = iter(bodies.take(plan.requests))
            r = await run_rate(pool, signed.__next__, plan, tick)
            del signed
            results.append(r)
            if progress is not None:
                progress.finish_rate(plan.duration_s, summary_line(r))
            if stop(r):
                break
    finally:
        pool.close()
    return results


def summary_line(r: RateResult) -> str:
    p = r.percentiles_ms()
    text = (
        f"{r.plan.rate:g} req/s offered, {r.achieved_rate:.0f} achieved: "
        f"p50 {p['p50']:.2f} p99 {p['p99']:.2f} max {p['max']:.2f} ms, "
        f"errors {r.error_ratio:.2%}"
    )
    return text + (f"  INVALID: {r.invalid_reason}" if r.invalid_reason else "")


def run_loop(coro: Any) -> Any:
    """Run ``coro`` on uvloop (the standard loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # Windows: the standard loop, slower
        return asyncio.run(coro)
    return uvloop.run(coro)


def make_plans(
    rates: Sequence[float], duration_s: float, cfg: dict[str, Any]
) -> list[LoadPlan]:
    """One plan per rate, with the timeout and lag limit of the load options.

    Raises
    ------
    ConfigError
        A rate whose requests would not fit in memory: every body is signed before
        the rate starts (~0.8 KB each).
    """
    plans = [LoadPlan(r, duration_s, cfg["timeout"], cfg["max_lag"]) for r in rates]
    for p in plans:
        if p.requests > MAX_REQUESTS_PER_RATE:
            raise ConfigError(
                f"{p.rate:g} req/s for {duration_s:g} s is {p.requests} requests; at "
                f"most {MAX_REQUESTS_PER_RATE} per rate (their bodies are signed "
                "first and kept in memory): shorten --duration"
            )
    return plans


def run_plans(
    url: str,
    plans: Sequence[LoadPlan],
    cfg: dict[str, Any],
    progress: Progress | None = None,
    stop: Callable[[RateResult], bool] = lambda r: False,
) -> list[RateResult]:
    """Run the plans in order over one pool (``stop`` ends the series early)."""
    return list(run_loop(_run_all(url, plans, cfg, progress, stop)))


def ramp(
    url: str,
    rates: Sequence[float],
    objective: Objective,
    cfg: dict[str, Any],
    duration_s: float,
    progress: Progress | None = None,
) -> tuple[float | None, list[RateResult]]:
    """Run ``rates`` in increasing order until one misses ``objective`` or is invalid;
    the highest rate that met it (None: not even the first) and every run."""
    results = run_plans(
        url,
        make_plans(sorted(rates), duration_s, cfg),
        cfg,
        progress,
        stop=lambda r: bool(r.invalid_reason or objective.misses(r)),
    )
    met = [
        r.plan.rate for r in results if not r.invalid_reason and not objective.misses(r)
    ]
    return (max(met) if met else None), results
