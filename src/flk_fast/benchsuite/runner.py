"""Runs of the load engine as ``flk bench load`` and ``flk bench slo`` make them: the
load options (one table for the flags and the SLO file's ``[load]`` keys), one pool
and one body source for all the rates of a run, progress, and the ramp.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from flk_fast.benchsuite.load import LoadPlan, RateResult, run_rate
from flk_fast.benchsuite.slo import Objective, parse_duration
from flk_fast.errors import ConfigError

__all__ = [
    "LOAD_OPTIONS",
    "LoadOption",
    "Progress",
    "load_config",
    "ramp",
    "run_loop",
    "run_plans",
]


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be in [0, 1), got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {text}")
    return value


@dataclass(frozen=True, slots=True)
class LoadOption:
    """One load option: ``--name-with-dashes`` on the command line, ``name`` in the
    SLO file's ``[load]`` table."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = "V"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


LOAD_OPTIONS = (
    LoadOption("connections", _count, 64, "keep-alive connections at most (64)", "N"),
    LoadOption(
        "timeout",
        lambda t: parse_duration(t, "--timeout"),
        10.0,
        "time allowed per request, from its intended send time (10s)",
        "T",
    ),
    LoadOption(
        "max_lag",
        lambda t: parse_duration(t, "--max-lag"),
        0.010,
        "p99 start lag beyond which the run is invalid (10ms)",
        "T",
    ),
    LoadOption(
        "key_file", str, None, "HMAC-SHA256 secret file that signs each PCS", "F"
    ),
    LoadOption(
        "ed25519_key_file", str, None, "Ed25519 private key instead of --key-file", "F"
    ),
    LoadOption("tenant", str, None, "send X-Tenant-Id: T", "T"),
    LoadOption(
        "resend_ratio",
        _ratio,
        0.0,
        "share of requests that resend an earlier body, i.e. dedup hits (0)",
        "R",
    ),
    LoadOption("shard_id", str, "flk-bench", "shard_id of the PCS (flk-bench)", "S"),
    LoadOption("sig_version", str, "0.2", "PCS version signed: 0.2 or 0.1 (0.2)"),
    LoadOption("tls_ca_file", str, None, "PEM CA bundle for https (default: system)", "F"),
    LoadOption("tls_cert", str, None, "client certificate (PEM) for mTLS", "F"),
    LoadOption("tls_key", str, None, "unencrypted key (PEM) of --tls-cert", "F"),
)
_BY_NAME = {o.name: o for o in LOAD_OPTIONS}
_PATHS = ("key_file", "ed25519_key_file", "tls_ca_file", "tls_cert", "tls_key")


def load_config(
    flags: dict[str, Any], table: dict[str, Any] | None = None, base: Path | None = None
) -> dict[str, Any]:
    """The load options: a flag given on the command line (not None) wins over the SLO
    file's ``[load]`` ``table``, which wins over the default. Paths in the file are
    relative to its folder ``base``."""
    table = table or {}
    out: dict[str, Any] = {}
    for key in table:
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
    if out["key_file"] is None and out["ed25519_key_file"] is None:
        raise ConfigError(
            "no signing key: give --key-file (HMAC) or --ed25519-key-file "
            "(or key_file in the SLO file's [load] table)"
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
    from flk_fast.benchsuite.http import HttpPool

    signer = load_signer(cfg["key_file"], cfg["ed25519_key_file"])
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
        await pool.connect(min(cfg["connections"], 16))
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
    plans = [
        LoadPlan(rate, duration_s, cfg["timeout"], cfg["max_lag"])
        for rate in sorted(rates)
    ]
    results = run_plans(
        url,
        plans,
        cfg,
        progress,
        stop=lambda r: bool(r.invalid_reason or objective.misses(r)),
    )
    met = [r.plan.rate for r in results if not r.invalid_reason and not objective.misses(r)]
    return (max(met) if met else None), results

