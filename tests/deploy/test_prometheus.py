"""deploy/prometheus and deploy/grafana against real servers: promtool checks and unit
tests, then a real Prometheus scraping a real ``flk serve --workers 2`` under light
load, where every recording rule, server alert expression and dashboard query must
return data."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.deploy.conftest import DEPLOY, need_tool
from tests.server.conftest import make_pcs
from tests.server.procs import ServerProcess

RULES = DEPLOY / "prometheus" / "flk-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "flk-dashboard.json"


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def signal_of(alert_expr: str) -> str:
    """The alert's expression with every comparison made ``bool`` and ``absent(x)``
    read as ``x``: non-empty exactly when the series it watches exist."""
    expr = re.sub(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)\s*", r"\1 bool ", alert_expr)
    return re.sub(r"\babsent\(", "(", expr)


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    subst = {"$job": "flk-server", "$instance": ".*", "$__rate_interval": "1m"}
    out = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for k, v in subst.items():
                expr = expr.replace(k, v)
            assert "$" not in expr, expr
            out.append(expr)
    return out


def test_promtool_checks_config_and_rules() -> None:
    promtool = need_tool("promtool", "prometheus")
    for args in (
        ["check", "rules", str(RULES)],
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["test", "rules", str(DEPLOY / "prometheus" / "flk-rules.test.yml")],
    ):
        out = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_fail_on_a_wrong_threshold(tmp_path: Path) -> None:
    promtool = need_tool("promtool", "prometheus")
    (tmp_path / "flk-rules.yml").write_text(
        RULES.read_text().replace("p99_5m > 0.01", "p99_5m > 0.05")
    )
    tests = tmp_path / "flk-rules.test.yml"
    tests.write_text((DEPLOY / "prometheus" / "flk-rules.test.yml").read_text())
    out = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True)
    assert out.returncode != 0
    assert b"FlkSubmitLatencyP99AboveSLO" in out.stdout + out.stderr


def test_signal_of_keeps_the_series_drops_the_threshold() -> None:
    assert signal_of('up{job="a"} == 0') == 'up{job="a"} == bool 0'
    assert signal_of("absent(up)") == "(up)"
    assert signal_of("a > bool 1") == "a > bool 1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path, "server", "--workers", "2")
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def agent(tmp_path: Path, server: ServerProcess) -> Iterator[tuple[int, Path]]:
    """A real ``flk agent --follow --metrics-port`` delivering to ``server``; the test
    appends events to its input file to keep it delivering."""
    from tests.agent.test_runner import write_csv

    src = tmp_path / "events.csv"
    write_csv(src, 100)
    port = _free_port()
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "flk_fast", "agent", "--endpoint", server.url,
         "--in", str(src), "--follow", "--window", "50", "--shard-id", "prom",
         "--data-dir", str(tmp_path / "agent-data"),
         "--hmac-key-file", str(tmp_path / "hmac.key"),
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield port, src
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def prometheus(
    tmp_path: Path, server: ServerProcess, agent: tuple[int, Path]
) -> Iterator[str]:
    binary = need_tool("prometheus", "prometheus")
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(RULES)]
    (job,) = cfg["scrape_configs"]
    assert job["job_name"] == "flk-server"  # what the alerts select
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    cfg["scrape_configs"].append(  # what the agent alerts select
        {
            "job_name": "flk-agent",
            "static_configs": [{"targets": [f"127.0.0.1:{agent[0]}"]}],
        }
    )
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = _free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _ready(url), "prometheus ready", tmp_path / "prometheus.log")
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 20 s."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait(cond: Any, what: str, log: Path | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what + (":\n" + log.read_text() if log else ""))
        time.sleep(0.5)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    resp = requests.get(url + "/api/v1/query", params={"query": expr}, timeout=10)
    body = resp.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def _load(url: str, start: int) -> None:
    """One round of every kind of submission the panels count."""
    s = requests.Session()
    s.headers["Content-Type"] = "application/json"
    for i in range(start, start + 10):
        assert s.post(url + "/v1/pcs/submit", data=make_pcs(i)).status_code == 200
    escalated = make_pcs(start, regime="sticky", shard_id="esc")
    assert s.post(url + "/v1/pcs/submit", data=escalated).status_code == 202
    assert (
        s.post(url + "/v1/pcs/submit", data=make_pcs(start)).status_code == 200
    )  # hit
    assert (
        s.post(url + "/v1/pcs/submit", data=make_pcs(start, key=b"x")).status_code
        == 401
    )
    assert s.post(url + "/v1/pcs/submit", data=b"{}").status_code == 400


@pytest.mark.slow
def test_rules_alerts_and_dashboard_see_a_real_server(
    server: ServerProcess, agent: tuple[int, Path], prometheus: str, tmp_path: Path
) -> None:
    rules = _rules()
    exprs = [r["record"] for r in rules if "record" in r]
    exprs += [signal_of(r["expr"]) for r in rules if "alert" in r]
    exprs += dashboard_queries()
    assert len(exprs) > 30
    round_ = [0]

    from tests.agent.test_runner import write_csv

    def all_answer() -> bool:
        _load(server.url, 1000 * round_[0])
        write_csv(agent[1], 50, start=100 + 50 * round_[0], header=False)
        round_[0] += 1
        return all(query(prometheus, e) for e in exprs)

    try:
        _wait(all_answer, "queries stayed empty", timeout=120)
    except TimeoutError:
        empty = [e for e in exprs if not query(prometheus, e)]
        raise AssertionError(f"empty in a real Prometheus: {empty}") from None
    # Two workers behind one target, summed by the supervisor's /metrics.
    (up,) = query(prometheus, 'up{job="flk-server"}')
    assert up["value"][1] == "1"
    ingested = query(prometheus, 'sum(flk_ingest_total{job="flk-server"})')
    assert float(ingested[0]["value"][1]) >= 10 * round_[0]
    (acked,) = query(prometheus, 'flk_agent_acked_total{job="flk-agent"}')
    assert float(acked["value"][1]) >= 2  # the agent really delivered
    assert not query(prometheus, 'ALERTS{alertstate="firing"}')
    # The dashboard's job/instance variables list the labels of this recording rule.
    (series,) = query(prometheus, "instance:flk_ingest:rate5m")
    assert series["metric"]["job"] == "flk-server"
    assert series["metric"]["instance"] == f"127.0.0.1:{server.port}"
    # The server goes away: the FlkServerDown expression itself turns non-empty.
    (down,) = [r["expr"] for r in rules if r.get("alert") == "FlkServerDown"]
    assert not query(prometheus, down)
    server.stop()
    _wait(lambda: bool(query(prometheus, down)), f"{down} stayed empty", timeout=30)
