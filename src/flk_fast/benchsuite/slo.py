"""Service-level objectives: bounds per offered rate, checked against a
:class:`~flk_fast.benchsuite.load.RateResult`, and the SLO file (TOML, docs/bench.md).

Exit codes of ``flk bench slo``: :data:`MET` 0, :data:`MISSED` 1, :data:`INVALID` 2
(a run that could not keep its schedule, or a bad SLO file: neither says anything
about the server).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flk_fast.benchsuite.options import PERCENTILES, parse_duration
from flk_fast.errors import ConfigError

if TYPE_CHECKING:
    from flk_fast.benchsuite.load import RateResult

__all__ = [
    "INVALID",
    "MET",
    "MISSED",
    "Objective",
    "SloFile",
    "load_slo",
    "parse_duration",
    "verdict_code",
]

MET, MISSED, INVALID = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Objective:
    """Upper bounds for one rate; a bound that is None is not checked."""

    latency_ms: dict[str, float] = field(default_factory=dict)
    max_error_ratio: float | None = None
    max_escalation_ratio: float | None = None

    def misses(self, r: RateResult) -> list[str]:
        """One line per bound that ``r`` exceeds (empty: met)."""
        out = []
        got = r.percentiles_ms()
        for name, bound in self.latency_ms.items():
            if not got[name] <= bound:  # nan (no answer at all) misses too
                out.append(f"{name} {got[name]:.2f} ms > {bound:g} ms")
        if self.max_error_ratio is not None and r.error_ratio > self.max_error_ratio:
            out.append(f"error ratio {r.error_ratio:.4f} > {self.max_error_ratio:g}")
        if (
            self.max_escalation_ratio is not None
            and r.escalation_ratio > self.max_escalation_ratio
        ):
            out.append(
                f"escalation ratio {r.escalation_ratio:.4f} > "
                f"{self.max_escalation_ratio:g}"
            )
        return out

    def describe(self) -> str:
        parts = [f"{k} <= {v:g} ms" for k, v in self.latency_ms.items()]
        if self.max_error_ratio is not None:
            parts.append(f"errors <= {self.max_error_ratio:g}")
        if self.max_escalation_ratio is not None:
            parts.append(f"escalations <= {self.max_escalation_ratio:g}")
        return ", ".join(parts) or "no bounds"


def verdict_code(results: list[tuple[RateResult, Objective]]) -> int:
    """INVALID if any run is invalid, else MISSED if any objective is missed,
    else MET."""
    if any(r.invalid_reason for r, _ in results):
        return INVALID
    return MISSED if any(o.misses(r) for r, o in results) else MET


@dataclass(frozen=True, slots=True)
class SloFile:
    """A parsed SLO file: rates in file order, each with its objective."""

    path: Path
    rates: list[tuple[float, Objective]]
    url: str | None = None
    duration_s: float = 30.0
    load: dict[str, Any] = field(default_factory=dict)


_TOP_KEYS = {"url", "duration", "load", "rate"}
_RATE_KEYS = {"rate", "latency_ms", "max_error_ratio", "max_escalation_ratio"}


def _ratio(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: must be in [0, 1], got {value!r}")
    return float(value)


def _objective(where: str, table: Any) -> tuple[float, Objective]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ([[rate]])")
    for key in table:
        if key not in _RATE_KEYS:
            raise ConfigError(
                f"{where}.{key}: unknown key; use {', '.join(sorted(_RATE_KEYS))}"
            )
    if "rate" not in table:
        raise ConfigError(f"{where}.rate: missing (requests per second)")
    rate = table["rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise ConfigError(f"{where}.rate: must be a number > 0, got {rate!r}")
    lat = table.get("latency_ms", {})
    if not isinstance(lat, dict):
        raise ConfigError(f"{where}.latency_ms: must be a table like {{ p99 = 50 }}")
    bounds = {}
    for name, bound in lat.items():
        if name not in PERCENTILES:
            raise ConfigError(
                f"{where}.latency_ms.{name}: unknown percentile; use "
                + ", ".join(PERCENTILES)
            )
        if isinstance(bound, bool) or not isinstance(bound, int | float) or bound <= 0:
            raise ConfigError(
                f"{where}.latency_ms.{name}: must be milliseconds > 0, got {bound!r}"
            )
        bounds[name] = float(bound)
    obj = Objective(
        latency_ms=bounds,
        max_error_ratio=(
            _ratio(f"{where}.max_error_ratio", table["max_error_ratio"])
            if "max_error_ratio" in table
            else None
        ),
        max_escalation_ratio=(
            _ratio(f"{where}.max_escalation_ratio", table["max_escalation_ratio"])
            if "max_escalation_ratio" in table
            else None
        ),
    )
    return float(rate), obj


def load_slo(path: str | Path) -> SloFile:
    """Parse and check an SLO file; every error names the file and the key.

    Raises
    ------
    ConfigError
        Unreadable file, bad TOML, an unknown or missing key, a value out of range.
    """
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"SLO file {p}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"SLO file {p}: not valid TOML: {exc}") from None
    try:
        for key in doc:
            if key not in _TOP_KEYS:
                raise ConfigError(
                    f"{key}: unknown key; use {', '.join(sorted(_TOP_KEYS))}"
                )
        tables = doc.get("rate")
        if not isinstance(tables, list) or not tables:
            raise ConfigError("rate: missing; add one [[rate]] table per offered rate")
        rates = [_objective(f"rate[{i}]", t) for i, t in enumerate(tables)]
        url = doc.get("url")
        if url is not None and not isinstance(url, str):
            raise ConfigError(f"url: must be a string, got {url!r}")
        load = doc.get("load", {})
        if not isinstance(load, dict):
            raise ConfigError("load: must be a table ([load])")
        duration = parse_duration(doc.get("duration", 30), "duration")
    except ConfigError as exc:
        raise ConfigError(f"SLO file {p}: {exc}") from None
    return SloFile(p, rates, url, duration, load)
