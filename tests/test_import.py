"""`import flk_fast` must stay cheap: no numba, lmdb, aiohttp, uvloop or numpy."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numba", "lmdb", "aiohttp", "uvloop", "numpy", "redis", "asyncpg")


def _modules_after(stmt: str) -> dict[str, object]:
    code = (
        "import sys, time, json\n"
        "t = time.perf_counter()\n"
        f"{stmt}\n"
        "dt = time.perf_counter() - t\n"
        "print(json.dumps({'mods': sorted(sys.modules), 'seconds': dt}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_import_flk_fast_pulls_in_nothing_heavy() -> None:
    report = _modules_after("import flk_fast")
    loaded = set(report["mods"])  # type: ignore[arg-type]
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    # Generous budget: the import is a few modules; pulling numpy/numba costs 0.2-0.5 s.
    assert report["seconds"] < 0.15, report["seconds"]


def test_protocol_does_not_import_numba_servers_or_ed25519() -> None:
    report = _modules_after("import flk_fast.protocol")
    loaded = set(report["mods"])  # type: ignore[arg-type]
    # cryptography is only for Ed25519 keys; HMAC-only agents never load it
    assert not loaded & {"numba", "lmdb", "aiohttp", "uvloop", "cryptography"}


def test_cli_help_does_not_import_heavy_modules() -> None:
    report = _modules_after("import flk_fast.cli as c; c.build_parser()")
    loaded = set(report["mods"])  # type: ignore[arg-type]
    assert not loaded & {"numba", "lmdb", "aiohttp", "uvloop"}, sorted(
        loaded & set(HEAVY)
    )


def test_version_reports_compiled_kernels() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flk_fast", "--version"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.startswith("flk_fast ")
    assert "compiled kernels:" in out
