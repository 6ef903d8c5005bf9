"""``flk bench load``: --ramp, the SLO flags, progress lines, and the docs table of
the load options."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from flk_fast.benchsuite.options import LOAD_OPTIONS
from flk_fast.benchsuite.runner import Progress
from flk_fast.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bench.md"


@pytest.mark.slow
@pytest.mark.needs_ext
def test_ramp_finds_the_highest_rate_that_meets_the_slo(
    endpoint, key_file, tmp_path, capsys
):
    # 2 connections x 20 ms = at most 100 req/s: 40 is met, 400 queues up and misses.
    ep = endpoint("--delay", "20ms")
    args = ["bench", "load", ep.url, "--rate", "400,40", "--duration", "1s"]
    args += ["--hmac-key-file", str(key_file), "--connections", "2"]
    args += ["--max-lag", "500ms"]
    args += ["--ramp", "--slo-latency", "p99=100"]
    args += ["--out", str(tmp_path / "r"), "--no-pictures"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "highest rate that met the SLO: 40 req/s" in err
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [(r["rate"], r["verdict"]) for r in doc["rates"]] == [
        (40, "met"),
        (400, "missed"),
    ]
    # Nothing meets a 1 ms p99 against a 20 ms endpoint: exit 1, and the ramp stops.
    args[args.index("p99=100")] = "p99=1"
    assert main(args) == 1
    assert "no rate met the SLO (lowest tried 40 req/s)" in capsys.readouterr().err
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [r["rate"] for r in doc["rates"]] == [40]


def test_a_run_too_big_for_memory_is_refused_before_it_starts(key_file, capsys):
    argv = ["bench", "load", "http://127.0.0.1:9/", "--rate", "20000"]
    assert main([*argv, "--duration", "30m", "--hmac-key-file", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert "is 36000000 requests; at most 2000000 per rate" in err, err


def test_ramp_needs_an_slo(capsys):
    assert (
        main(
            [
                "bench",
                "load",
                "http://127.0.0.1:9/",
                "--rate",
                "1",
                "--ramp",
                "--hmac-key-file",
                "k",
            ]
        )
        == 2
    )
    assert "--ramp needs an SLO" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--slo-latency", "p95=3", "unknown percentile"),
        ("--slo-latency", "p99=fast", "expected NAME=MS"),
        ("--max-error-ratio", "2", "must be in [0, 1]"),
        ("--rate", "0", "rates must be > 0"),
        ("--duration", "soon", "is not a duration"),
        ("--resend-ratio", "1", "must be in [0, 1)"),
        ("--connections", "0", "must be >= 1"),
    ],
)
def test_bad_flags_are_usage_errors(capsys, flag, value, message):
    argv = ["bench", "load", "http://127.0.0.1:9/", "--rate", "1"]
    argv += ["--hmac-key-file", "k"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, flag, value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "old", "new"),
    [
        ("load", ["--key-file", "k"], "use --hmac-key-file"),
        ("load", ["--key", "sekrit"], "--hmac-key-env VAR"),
        ("slo", ["--key-file", "k"], "use --hmac-key-file"),
    ],
)
def test_old_key_flags_are_refused_naming_the_new_one(capsys, command, old, new):
    argv = ["bench", command]
    argv += ["http://127.0.0.1:9/", "--rate", "1"] if command == "load" else ["s.toml"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, *old])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert new in err and "sekrit" not in err, err


def test_progress_is_log_lines_off_a_terminal():
    out = io.StringIO()
    p = Progress(20.0, out)
    for second in range(10):
        p.tick("100 req/s", float(second))
    p.finish_rate(10.0, "done")
    p.tick("200 req/s", 1.0)
    lines = out.getvalue().splitlines()
    assert lines == [
        "flk bench:   0% 100 req/s",
        "flk bench:  25% 100 req/s",
        "flk bench: done",
        "flk bench:  55% 200 req/s",
    ]


def test_every_load_option_is_in_the_docs_table():
    text = DOCS.read_text()
    for opt in LOAD_OPTIONS:
        assert f"| `{opt.flag}" in text and f"| `{opt.name}` |" in text, opt.name
