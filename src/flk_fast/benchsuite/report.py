"""The report of a load or SLO run: JSON (everything, histograms included), Markdown
(one table, the verdicts) and pictures (matplotlib, the ``[bench]`` extra)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from flk_fast.benchsuite.load import RateResult
from flk_fast.benchsuite.options import PERCENTILES
from flk_fast.benchsuite.slo import Objective, verdict_code
from flk_fast.errors import ConfigError

__all__ = ["report_json", "report_markdown", "write_pictures", "write_report"]

_VERDICT = {0: "met", 1: "missed", 2: "invalid run"}


def _verdict(r: RateResult, o: Objective | None) -> tuple[str, list[str]]:
    if r.invalid_reason:
        return "invalid", [r.invalid_reason]
    if o is None:
        return "-", []
    misses = o.misses(r)
    return ("missed" if misses else "met"), misses


def report_json(
    url: str, runs: list[tuple[RateResult, Objective | None]]
) -> dict[str, Any]:
    checked = [(r, o) for r, o in runs if o is not None]
    out: dict[str, Any] = {"url": url, "rates": []}
    if checked:
        out["verdict"] = _VERDICT[verdict_code(checked)]
    for r, o in runs:
        doc = r.to_json()
        doc["verdict"], doc["misses"] = _verdict(r, o)
        if o is not None:
            doc["objective"] = {
                "latency_ms": o.latency_ms,
                "max_error_ratio": o.max_error_ratio,
                "max_escalation_ratio": o.max_escalation_ratio,
            }
        out["rates"].append(doc)
    return out


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f}"


def report_markdown(
    url: str, runs: list[tuple[RateResult, Objective | None]], pictures: list[str]
) -> str:
    heads = ["offered req/s", "achieved", *(f"{k} ms" for k in PERCENTILES)]
    heads += ["errors", "escalated", "statuses", "verdict"]
    lines = [
        f"# flk bench: {url}",
        "",
        "Latency from each request's intended send time (open loop, no coordinated "
        "omission); HdrHistogram percentiles.",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    notes = []
    for r, o in runs:
        pct = r.percentiles_ms()
        verdict, why = _verdict(r, o)
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
        statuses += "".join(f", {k}: {v}" for k, v in sorted(r.failures.items()))
        cells = [f"{r.plan.rate:g}", f"{r.achieved_rate:.0f}"]
        cells += [_ms(pct[k]) for k in PERCENTILES]
        cells += [f"{r.error_ratio:.2%}", f"{r.escalation_ratio:.2%}", statuses]
        cells.append(verdict)
        lines.append("| " + " | ".join(cells) + " |")
        if o is not None:
            notes.append(f"- {r.plan.rate:g} req/s: objective {o.describe()}")
        notes += [f"  - {w}" for w in why]
    checked = [(r, o) for r, o in runs if o is not None]
    if checked:
        lines += ["", f"**Verdict: {_VERDICT[verdict_code(checked)]}**", ""]
    lines += notes
    if pictures:
        lines += ["", *(f"![{Path(p).stem}]({Path(p).name})" for p in pictures)]
    return "\n".join(lines) + "\n"


def write_pictures(runs: list[RateResult], out_dir: Path) -> list[str]:
    """latency-vs-rate and latency-over-time, each as PNG and SVG; the PNG paths."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "pictures need matplotlib: pip install 'flk_fast[bench]' "
            "(or pass --no-pictures)"
        ) from None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rates = [r.plan.rate for r in runs]
    for name in PERCENTILES:
        ys = [r.percentiles_ms()[name] for r in runs]
        ax.plot(rates, ys, marker="o", label=name)
    for r in runs:
        if r.invalid_reason:
            ax.axvline(r.plan.rate, color="red", alpha=0.3, linestyle="--")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_yscale("log")
    ax.set_title("Latency percentiles against offered rate (red: invalid run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    written += _save(fig, out_dir / "latency-vs-rate")
    plt.close(fig)

    fig, axes = plt.subplots(
        len(runs), 1, figsize=(8, 2.4 * len(runs) + 0.6), squeeze=False, sharex=True
    )
    for ax, r in zip(axes[:, 0], runs, strict=True):
        tl = r.timeline()
        # Each second is a step from its start to the next; the last one needs an end.
        xs = [p["second"] for p in tl] + [len(tl)]
        for key in ("p50", "p99", "max"):
            ys = [p[key] for p in tl]
            ax.plot(xs, ys + ys[-1:], label=key, drawstyle="steps-post")
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"{r.plan.rate:g} req/s offered", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("second of the run (by intended send time)")
    fig.suptitle("Latency over time")
    fig.tight_layout()
    written += _save(fig, out_dir / "latency-over-time")
    plt.close(fig)
    return [p for p in written if p.endswith(".png")]


def _save(fig: Any, stem: Path) -> list[str]:
    out = []
    for ext in ("png", "svg"):
        path = f"{stem}.{ext}"
        fig.savefig(path, dpi=110)
        out.append(path)
    return out


def write_report(
    url: str,
    runs: list[tuple[RateResult, Objective | None]],
    out_dir: Path,
    pictures: bool = True,
) -> dict[str, Any]:
    """report.json, report.md and (with ``pictures``) the PNG/SVG files in
    ``out_dir``; returns the JSON document."""
    doc = report_json(url, runs)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        pngs = write_pictures([r for r, _ in runs], out_dir) if pictures else []
        _write(out_dir / "report.json", json.dumps(doc, indent=2) + "\n")
        _write(out_dir / "report.md", report_markdown(url, runs, pngs))
    except OSError as exc:
        raise ConfigError(
            f"--out {out_dir}: cannot write the report: {exc.strerror or exc}"
        ) from None
    return doc


def _write(path: Path, text: str) -> None:
    # Whole or not at all: a reader (CI comparing runs) never sees half a report.
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
