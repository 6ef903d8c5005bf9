"""``flk bench kernels``: run :mod:`flk_fast.benchsuite.kernel_cases` under
pytest-benchmark, pair every kernel with its baseline, compare with a saved run."""

from __future__ import annotations

import json
import math
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from flk_fast.errors import ConfigError

__all__ = ["compare", "markdown", "run_kernels"]


class _SizePlugin:
    """Hands ``--size`` to the cases as the ``bench_size`` fixture."""

    def __init__(self, size: float) -> None:
        self.size = size

    @pytest.fixture
    def bench_size(self) -> float:
        return self.size


def run_kernels(size: float = 1.0, select: str | None = None) -> dict[str, Any]:
    """Run the cases; the result document (what ``--save`` writes)."""
    try:
        import pytest_benchmark  # noqa: F401
    except ImportError:
        raise ConfigError(
            "flk bench kernels needs pytest-benchmark: pip install 'flk_fast[bench]'"
        ) from None
    if not (math.isfinite(size) and size > 0):
        raise ConfigError(f"--size must be > 0, got {size}")
    from flk_fast.benchsuite import kernel_cases

    with tempfile.TemporaryDirectory(prefix="flk-bench-") as tmp:
        ini = Path(tmp) / "pytest.ini"
        # Not the project's settings, wherever we run; pytest-asyncio (if installed)
        # warns at start-up unless its loop scope is set.
        asyncio_scope = "asyncio_default_fixture_loop_scope = function\n"
        ini.write_text(
            "[pytest]\n" + (asyncio_scope if find_spec("pytest_asyncio") else "")
        )
        raw = Path(tmp) / "raw.json"
        args = [
            kernel_cases.__file__,
            "-c", str(ini),
            "--rootdir", tmp,
            "-p", "no:cacheprovider",
            "-q",
            "--benchmark-only",
            f"--benchmark-json={raw}",
            "--benchmark-columns=median,min,rounds",
            "--benchmark-group-by=group",
        ]  # fmt: skip
        if select:
            args += ["-k", select]
        code = pytest.main(args, plugins=[_SizePlugin(size)])
        if code not in (pytest.ExitCode.OK,) or not raw.exists():
            raise ConfigError(f"the kernel benchmarks failed (pytest exit {int(code)})")
        doc = json.loads(raw.read_text())
    return _summarise(doc, size)


def _summarise(raw: dict[str, Any], size: float) -> dict[str, Any]:
    by_case: dict[str, dict[str, Any]] = {}
    for b in raw["benchmarks"]:
        role = b["extra_info"]["role"]
        entry = by_case.setdefault(b["group"], {"case": b["group"]})
        entry[f"{role}_median_s"] = b["stats"]["median"]
        entry["baseline"] = b["extra_info"]["baseline"]
    cases = []
    for entry in by_case.values():
        k, base = entry.get("kernel_median_s"), entry.get("baseline_median_s")
        entry["speedup"] = base / k if k and base else None
        cases.append(entry)
    return {
        "size": size,
        "machine": raw.get("machine_info", {}),
        "datetime": raw.get("datetime"),
        "cases": cases,
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"| case (size {doc['size']:g}) | kernel median | baseline | baseline median "
        "| speed-up |",
        "|---|---|---|---|---|",
    ]
    for c in doc["cases"]:
        k, b = c.get("kernel_median_s"), c.get("baseline_median_s")
        lines.append(
            f"| {c['case']} | {_t(k)} | {c['baseline']} | {_t(b)} | "
            + (f"{c['speedup']:.1f}x |" if c.get("speedup") else "- |")
        )
    return "\n".join(lines) + "\n"


def _t(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def compare(doc: dict[str, Any], baseline_path: str, threshold: float) -> list[str]:
    """One line per case whose kernel median is slower than in the saved run by more
    than ``threshold`` (0.25 = 25 %); cases missing from either side are skipped."""
    try:
        old = json.loads(Path(baseline_path).read_text())
        old_cases = {c["case"]: c for c in old["cases"]}
    except OSError as exc:
        raise ConfigError(f"--compare {baseline_path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"--compare {baseline_path}: not a file written by 'flk bench kernels "
            f"--save' ({exc})"
        ) from None
    if old.get("size") != doc["size"]:
        raise ConfigError(
            f"--compare {baseline_path}: saved with --size {old.get('size')}, this run "
            f"is --size {doc['size']}; compare runs of the same size"
        )
    out = []
    for c in doc["cases"]:
        prev = old_cases.get(c["case"], {}).get("kernel_median_s")
        now = c.get("kernel_median_s")
        if prev and now and now > prev * (1 + threshold):
            out.append(
                f"{c['case']}: {_t(now)} vs {_t(prev)} saved "
                f"(+{now / prev - 1:.0%} > {threshold:.0%})"
            )
    return out
