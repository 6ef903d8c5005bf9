"""``flk bench``: load, SLO and kernel benchmarks of a deployment (docs/bench.md)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flk_fast.cli._common import add_command, fail, refuse_old_key_flags

# Exit codes of load and slo (flk_fast.benchsuite.slo: MET, MISSED, INVALID).
_MET, _MISSED, _INVALID = 0, 1, 2


def _rates(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected req/s like 500,1000,2000, got {text!r}"
        ) from None
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"rates must be > 0, got {text!r}")
    return vals


def _duration(text: str) -> float:
    from flk_fast.benchsuite.options import parse_duration
    from flk_fast.errors import ConfigError

    try:
        return parse_duration(text, "--duration")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _latency_bounds(text: str) -> dict[str, float]:
    from flk_fast.benchsuite.options import PERCENTILES

    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in PERCENTILES:
            raise argparse.ArgumentTypeError(
                f"{name!r}: unknown percentile; use {', '.join(PERCENTILES)}"
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected NAME=MS like p99=50"
            ) from None
    return out


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _add_load_options(p: argparse.ArgumentParser) -> None:
    from flk_fast.benchsuite.options import LOAD_OPTIONS

    g = p.add_argument_group("load (also the [load] table of an SLO file)")
    for opt in LOAD_OPTIONS:

        def parse(text: str, opt: Any = opt) -> Any:
            try:
                return opt.parse(text)
            except Exception as exc:  # noqa: BLE001 - every parser error is usage
                raise argparse.ArgumentTypeError(str(exc)) from None

        g.add_argument(
            opt.flag, type=parse, default=None, metavar=opt.metavar, help=opt.help
        )


def _add_report_options(p: argparse.ArgumentParser, default_out: str | None) -> None:
    p.add_argument(
        "--out",
        metavar="DIR",
        default=default_out,
        help="write report.md, report.json and the pictures (PNG, SVG) here"
        + (f" ({default_out})" if default_out else ""),
    )
    p.add_argument(
        "--no-pictures", action="store_true", help="skip the pictures (no matplotlib)"
    )


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "bench",
        help="benchmark a deployment: open-loop load, SLO verdicts, kernels",
        examples="""\
  flk bench load http://127.0.0.1:8080 --rate 500,1000,2000 --duration 30s \\
      --hmac-key-file secret.key
  flk bench slo slo.toml http://ingest:8080 --out report/
  flk bench kernels --compare baseline.json""",
    )
    bsub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    lp = add_command(
        bsub,
        "load",
        help="open-loop load at constant rates; latency from each request's intended "
        "send time (exit 0, 1 SLO missed or --ramp found none, 2 invalid run)",
        examples="""\
  flk bench load http://127.0.0.1:8080 --rate 500,1000 --duration 30s \\
      --hmac-key-file k
  flk bench load https://ingest:8443 --rate 1000 --hmac-key-file k --tenant acme \\
      --tls-ca-file ca.pem --tls-cert me.pem --tls-key me.key
  flk bench load http://127.0.0.1:8080 --rate 1000,2000,4000,8000 --ramp \\
      --slo-latency p99=50 --max-error-ratio 0.001 --hmac-key-file k""",
    )
    lp.add_argument(
        "url", metavar="URL", help="submit URL; a bare base URL gets /v1/pcs/submit"
    )
    lp.add_argument(
        "--rate",
        type=_rates,
        required=True,
        metavar="LIST",
        help="req/s, comma-separated",
    )
    lp.add_argument(
        "--duration", type=_duration, default=30.0, metavar="T", help="per rate (30s)"
    )
    lp.add_argument(
        "--ramp",
        action="store_true",
        help="run the rates in increasing order, stop at the first that misses the "
        "SLO given by --slo-latency / --max-error-ratio / --max-escalation-ratio, and "
        "report the highest rate that met it",
    )
    s = lp.add_argument_group("SLO (optional; each rate is checked against it)")
    s.add_argument(
        "--slo-latency",
        type=_latency_bounds,
        metavar="BOUNDS",
        help="latency bounds in ms, e.g. p50=5,p99=50,p99.9=200 "
        "(of p50 p90 p99 p99.9 max)",
    )
    s.add_argument("--max-error-ratio", type=_ratio, metavar="R", help="e.g. 0.001")
    s.add_argument("--max-escalation-ratio", type=_ratio, metavar="R", help="e.g. 0.01")
    _add_load_options(lp)
    refuse_old_key_flags(lp)
    _add_report_options(lp, None)
    lp.set_defaults(func=_load)

    sp = add_command(
        bsub,
        "slo",
        help="run the rates of an SLO file and judge them (exit 0 met, 1 missed, "
        "2 invalid run or bad file); report in Markdown and JSON, and pictures",
        examples="""\
  flk bench slo slo.toml                       # url from the file
  flk bench slo slo.toml http://ingest:8080 --out report/ --duration 10s""",
    )
    sp.add_argument("slo_file", metavar="SLO.toml", help="the SLO file (docs/bench.md)")
    sp.add_argument("url", nargs="?", metavar="URL", help="overrides the file's url")
    sp.add_argument(
        "--duration", type=_duration, metavar="T", help="per rate; overrides the file's"
    )
    _add_load_options(sp)
    refuse_old_key_flags(sp)
    _add_report_options(sp, "bench-report")
    sp.set_defaults(func=_slo)

    kp = add_command(
        bsub,
        "kernels",
        help="kernel and protocol microbenchmarks (pytest-benchmark), each beside its "
        "plain baseline; --compare fails (exit 1) on a regression",
        examples="""\
  flk bench kernels --save baseline.json
  flk bench kernels --compare baseline.json --threshold 0.25""",
    )
    kp.add_argument(
        "--size",
        type=float,
        default=1.0,
        metavar="F",
        help="scale every problem (1.0; 0.1 for a quick look)",
    )
    kp.add_argument(
        "-k", dest="select", metavar="EXPR", help="only cases matching (pytest -k)"
    )
    kp.add_argument("--save", metavar="FILE", help="write the results (JSON) here")
    kp.add_argument(
        "--compare",
        metavar="BASELINE.json",
        help="a file written by --save: fail when a kernel's median is slower than "
        "there by more than --threshold",
    )
    kp.add_argument(
        "--threshold",
        type=float,
        default=0.25,
        metavar="F",
        help="allowed slow-down for --compare, as a fraction (0.25 = 25 %%)",
    )
    kp.set_defaults(func=_kernels)


def _usage_errors(fn: Callable[[argparse.Namespace], int]) -> Any:
    """Run a handler; a FlkError (bad input, unreachable server) is one error line
    and exit 2."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from flk_fast.errors import FlkError

        try:
            return fn(args)
        except FlkError as exc:
            return fail(str(exc))

    return run


def _objective(args: argparse.Namespace) -> Any:
    from flk_fast.benchsuite.slo import Objective

    if not (
        args.slo_latency
        or args.max_error_ratio is not None
        or args.max_escalation_ratio is not None
    ):
        return None
    return Objective(
        latency_ms=args.slo_latency or {},
        max_error_ratio=args.max_error_ratio,
        max_escalation_ratio=args.max_escalation_ratio,
    )


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    from flk_fast.benchsuite.options import LOAD_OPTIONS

    return {o.name: getattr(args, o.name) for o in LOAD_OPTIONS}


def _finish(
    url: str, runs: list[Any], out: str | None, pictures: bool, code: int
) -> int:
    from flk_fast.benchsuite.report import report_markdown, write_report

    if out:
        write_report(url, runs, Path(out), pictures=pictures)
        print(f"flk bench: report in {out}/report.md", file=sys.stderr)
    print(report_markdown(url, runs, []), end="")
    return code


@_usage_errors
def _load(args: argparse.Namespace) -> int:
    from flk_fast.benchsuite.http import target_url
    from flk_fast.benchsuite.runner import (
        Progress,
        load_config,
        make_plans,
        ramp,
        run_plans,
    )
    from flk_fast.benchsuite.slo import verdict_code

    objective = _objective(args)
    if args.ramp and objective is None:
        return fail(
            "--ramp needs an SLO: --slo-latency, --max-error-ratio or "
            "--max-escalation-ratio"
        )
    url = target_url(args.url)
    cfg = load_config(_flags(args))
    progress = Progress(args.duration * len(args.rate))
    if args.ramp:
        best, results = ramp(url, args.rate, objective, cfg, args.duration, progress)
        runs = [(r, objective) for r in results]
        code = _MET if best is not None else _MISSED
        msg = (
            f"highest rate that met the SLO: {best:g} req/s"
            if best is not None
            else f"no rate met the SLO (lowest tried {min(args.rate):g} req/s)"
        )
        print(f"flk bench: {msg}", file=sys.stderr)
    else:
        plans = make_plans(args.rate, args.duration, cfg)
        results = run_plans(url, plans, cfg, progress)
        runs = [(r, objective) for r in results]
        if objective is None:
            code = _INVALID if any(r.invalid_reason for r in results) else _MET
        else:
            code = verdict_code(runs)
    return _finish(url, runs, args.out, not args.no_pictures, code)


@_usage_errors
def _slo(args: argparse.Namespace) -> int:
    from flk_fast.benchsuite.http import target_url
    from flk_fast.benchsuite.runner import Progress, load_config, make_plans, run_plans
    from flk_fast.benchsuite.slo import load_slo, verdict_code
    from flk_fast.errors import FlkError

    slo = load_slo(args.slo_file)
    raw_url = args.url or slo.url
    if not raw_url:
        return fail(f"no URL: give one after {args.slo_file} or set url in the file")
    url = target_url(raw_url)
    try:
        cfg = load_config(_flags(args), slo.load, slo.path.parent)
    except FlkError as exc:
        return fail(f"SLO file {slo.path}: {exc}")
    duration = args.duration or slo.duration_s
    plans = make_plans([rate for rate, _ in slo.rates], duration, cfg)
    results = run_plans(url, plans, cfg, Progress(duration * len(plans)))
    runs = list(zip(results, [o for _, o in slo.rates], strict=True))
    code = verdict_code(runs)
    return _finish(url, runs, args.out, not args.no_pictures, code)


@_usage_errors
def _kernels(args: argparse.Namespace) -> int:
    from flk_fast.benchsuite.kernels import compare, markdown, run_kernels

    doc = run_kernels(size=args.size, select=args.select)
    print(markdown(doc), end="")
    if args.save:
        try:
            Path(args.save).write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            return fail(f"--save {args.save}: {exc.strerror}")
    if args.compare:
        regressions = compare(doc, args.compare, args.threshold)
        for line in regressions:
            print(f"flk bench: regression: {line}", file=sys.stderr)
        return _MISSED if regressions else _MET
    return _MET
