"""SLO files that pass, fail and are malformed, through the real ``flk bench slo``
command (exit 0 / 1 / 2), and the report: Markdown, JSON and the pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flk_fast.benchsuite.slo import load_slo, parse_duration
from flk_fast.cli import main
from flk_fast.errors import ConfigError


def _slo(tmp: Path, body: str) -> Path:
    path = tmp / "slo.toml"
    path.write_text(body)
    return path


GOOD = """\
duration = "1s"
[load]
hmac_key_file = "hmac.key"
connections = 8
max_lag = "500ms"  # lenient: a shared machine can hold the generator back
[[rate]]
rate = 100
latency_ms = { p50 = 500, p99 = 2000, "p99.9" = 3000 }
max_error_ratio = 0.01
max_escalation_ratio = 0.0
[[rate]]
rate = 200
latency_ms = { p99 = 2000 }
"""


@pytest.mark.slow
@pytest.mark.needs_ext
def test_an_slo_that_is_met_exits_0_with_report_and_pictures(
    endpoint, key_file, tmp_path, capsys
):
    ep = endpoint()
    out = tmp_path / "r"
    code = main(["bench", "slo", str(_slo(tmp_path, GOOD)), ep.url, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "report.json").read_text())
    assert doc["verdict"] == "met"
    assert [r["rate"] for r in doc["rates"]] == [100, 200]
    assert doc["rates"][0]["statuses"] == {"200": 100}
    assert doc["rates"][0]["objective"]["latency_ms"]["p99.9"] == 3000
    md = (out / "report.md").read_text()
    assert "**Verdict: met**" in md and "![latency-vs-rate](latency-vs-rate.png)" in md
    for stem in ("latency-vs-rate", "latency-over-time"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:2000]
    assert "| 100 | 100 |" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.needs_ext
def test_an_slo_that_is_missed_exits_1_and_names_the_bound(
    endpoint, key_file, tmp_path, capsys
):
    ep = endpoint("--delay", "20ms", "--fail-ratio", "0.2")
    slo = _slo(
        tmp_path,
        GOOD.replace("p50 = 500", "p50 = 5").replace("rate = 200\n", "rate = 50\n"),
    )
    code = main(["bench", "slo", str(slo), ep.url, "--out", str(tmp_path / "r")])
    assert code == 1
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["verdict"] == "missed"
    first = doc["rates"][0]
    assert first["verdict"] == "missed"
    assert first["error_ratio"] == pytest.approx(0.2)
    assert any(m.startswith("p50 ") and m.endswith("> 5 ms") for m in first["misses"])
    assert any(m.startswith("error ratio 0.2000 > 0.01") for m in first["misses"])
    assert doc["rates"][1]["verdict"] == "met"  # no error bound at 50 req/s
    assert "**Verdict: missed**" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.needs_ext
def test_an_invalid_run_exits_2(endpoint, key_file, tmp_path, capsys):
    ep = endpoint()
    # A start-lag limit no generator can keep: every run is invalid.
    slo = str(_slo(tmp_path, GOOD))
    code = main(
        ["bench", "slo", slo, ep.url, "--max-lag", "0.0001ms", "--no-pictures"]
        + ["--out", str(tmp_path / "r")]
    )
    assert code == 2
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["verdict"] == "invalid run"
    assert doc["rates"][0]["valid"] is False
    assert "fell behind its schedule" in capsys.readouterr().out


MALFORMED = [
    ("rate = [", "not valid TOML"),
    ("duration = '1s'\n", "rate: missing"),
    (
        "[[rate]]\nrate = 100\nlatency_ms = { p95 = 5 }\n",
        "rate[0].latency_ms.p95: unknown percentile",
    ),
    (
        "[[rate]]\nrate = 100\nlatency_ms = { p99 = -1 }\n",
        "rate[0].latency_ms.p99: must be milliseconds > 0",
    ),
    ("[[rate]]\nrate = 0\n", "rate[0].rate: must be a number > 0"),
    ("[[rate]]\nlatency_ms = { p99 = 5 }\n", "rate[0].rate: missing"),
    (
        "[[rate]]\nrate = 1\nmax_error_ratio = 2\n",
        "rate[0].max_error_ratio: must be in [0, 1]",
    ),
    ("[[rate]]\nrate = 1\np99 = 5\n", "rate[0].p99: unknown key"),
    ("sla = 1\n[[rate]]\nrate = 1\n", "sla: unknown key"),
    ("duration = 'soon'\n[[rate]]\nrate = 1\n", "duration: 'soon' is not a duration"),
    (
        "[load]\nhmac_key_file = 'hmac.key'\nconections = 4\n[[rate]]\nrate = 1\n",
        "[load] conections: unknown key",
    ),
    (
        "[load]\nhmac_key_file = 'hmac.key'\nconnections = 0\n[[rate]]\nrate = 1\n",
        "[load] connections: must be >= 1",
    ),
    (
        "[load]\nkey_file = 'hmac.key'\n[[rate]]\nrate = 1\n",
        "[load] key_file: renamed; write hmac_key_file",
    ),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED)
def test_a_malformed_slo_file_exits_2_naming_the_key(tmp_path, capsys, body, message):
    (tmp_path / "hmac.key").write_bytes(b"k")
    if "[load]" not in body:
        body += "[load]\nhmac_key_file = 'hmac.key'\n"
    slo = _slo(tmp_path, body)
    code = main(["bench", "slo", str(slo), "http://127.0.0.1:9/"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and str(slo) in err, err


def test_missing_file_url_and_key_are_usage_errors(tmp_path, capsys):
    assert main(["bench", "slo", str(tmp_path / "nope.toml"), "http://x/"]) == 2
    assert "No such file" in capsys.readouterr().err
    slo = _slo(tmp_path, "[[rate]]\nrate = 1\n")
    assert main(["bench", "slo", str(slo)]) == 2
    assert "no URL" in capsys.readouterr().err
    assert main(["bench", "slo", str(slo), "http://127.0.0.1:9/"]) == 2
    assert "no signing key" in capsys.readouterr().err
    argv = ["bench", "load", "ftp://x", "--rate", "1", "--hmac-key-file", "k"]
    assert main(argv) == 2
    assert "http:// or https://" in capsys.readouterr().err


def test_the_slo_file_paths_are_relative_to_it(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    slo = load_slo(_slo(sub, GOOD))
    assert slo.duration_s == 1.0 and slo.load["hmac_key_file"] == "hmac.key"
    assert [r for r, _ in slo.rates] == [100.0, 200.0]
    assert slo.rates[0][1].latency_ms == {"p50": 500.0, "p99": 2000.0, "p99.9": 3000.0}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1.5", 1.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-1s", "3 days", "1e3s", "nan"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("name", ["options", "http"])
def test_the_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"flk_fast.benchsuite.{name}"))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
@pytest.mark.needs_ext
def test_a_full_disk_for_the_report_is_a_clear_error(
    endpoint, key_file, tiny_disk, capsys
):
    ep = endpoint()
    (tiny_disk / "filler").write_bytes(b"\0" * (4 * 2**20 - 4096))  # leave ~one page
    out = tiny_disk / "report"
    code = main(
        ["bench", "load", ep.url, "--rate", "100", "--duration", "1s"]
        + ["--hmac-key-file", str(key_file), "--out", str(out)]
    )
    assert code == 2
    assert "cannot write the report: No space left on device" in capsys.readouterr().err
    assert not (out / "report.json").exists()  # never half a report


def test_a_missing_key_file_is_a_usage_error(tmp_path, capsys):
    slo = _slo(tmp_path, "[[rate]]\nrate = 1\n[load]\nhmac_key_file = 'absent.key'\n")
    assert main(["bench", "slo", str(slo), "http://127.0.0.1:9/"]) == 2
    err = capsys.readouterr().err
    assert "absent.key" in err and "No such file" in err, err
