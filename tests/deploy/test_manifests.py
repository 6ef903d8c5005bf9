"""deploy/: the Prometheus files, the dashboard and the compose stack use real metric
names, recording rules and ``flk serve`` options."""

from __future__ import annotations

import json
import re

import yaml

from flk_fast.metrics import ServerMetrics
from tests.deploy.conftest import DEPLOY
from tests.deploy.options import SERVE_ENV, parse_serve

#: The agent's metrics (``flk agent --metrics-port``), named by the agent alerts.
AGENT_METRICS = {
    "flk_agent_dlq_entries",
    "flk_agent_last_delivery_timestamp_seconds",
    "flk_agent_acked_total",
}


def _families() -> set[str]:
    text = ServerMetrics().render().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            if kind == "histogram":
                names |= {name + s for s in ("_bucket", "_count", "_sum")}
    return names


def _used_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bflk_[a-z_]+(?=[\[{(\s])", text)) - {
        "flk_server",
        "flk_fast",
    }


def _recorded() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "flk-rules.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def test_rules_use_real_metrics() -> None:
    text = (DEPLOY / "prometheus" / "flk-rules.yml").read_text()
    used = _used_metrics(text)
    assert used and used <= _families() | AGENT_METRICS, used - _families()
    rules = yaml.safe_load(text)
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts >= {
        "FlkEscalationBudgetBurnFast",
        "FlkEscalationBudgetBurnSlow",
        "FlkSubmitLatencyP99AboveSLO",
        "FlkServerDown",
        "FlkServerAbsent",
        "FlkDedupUnavailable",
        "FlkWalErrors",
        "FlkAgentDlqGrowing",
        "FlkAgentNotDelivering",
    }


def test_prometheus_config_scrapes_static_targets_only() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = cfg["scrape_configs"]
    assert job["job_name"] == "flk-server" and job["metrics_path"] == "/metrics"
    assert set(job) == {"job_name", "metrics_path", "static_configs"}
    assert cfg["rule_files"] == ["flk-rules.yml"]


def test_grafana_dashboard_reads_the_recording_rules() -> None:
    dash = json.loads((DEPLOY / "grafana" / "flk-dashboard.json").read_text())
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for wanted in (
        "ingest rate",
        "accept vs escalate",
        "dedup hit ratio",
        "error rates",
        "slo",
        "latency",
    ):
        assert wanted in titles, wanted
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= set(variables)
    for name in ("job", "instance"):
        assert (
            variables[name]["query"]["query"].split("(")[1].split(",")[0].split("{")[0]
            in _recorded()
        )
    recorded = _recorded()
    for panel in dash["panels"]:
        for t in panel["targets"]:
            expr = t["expr"]
            assert "$job" in expr, (panel["title"], expr)
            names = set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", expr))
            assert names <= recorded, names - recorded
    used = _used_metrics(json.dumps(dash))
    assert used <= _families(), used - _families()
    uses_rules = [
        p
        for p in dash["panels"]
        if any(":" in t["expr"].split("{")[0] for t in p["targets"])
    ]
    assert len(uses_rules) >= len(dash["panels"]) - 2


def test_compose_stack_passes_only_what_flk_serve_accepts() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    server = compose["services"]["server"]
    parse_serve(server["command"])
    assert set(server["environment"]) <= SERVE_ENV, (
        set(server["environment"]) - SERVE_ENV
    )
    redis = " ".join(compose["services"]["redis"]["command"])
    # docs/storage.md, "Durability": the dedup store refuses anything less.
    assert "--appendonly yes" in redis and "--appendfsync always" in redis
    assert server["read_only"] is True
    for svc in compose["services"].values():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    prov = DEPLOY / "compose" / "grafana" / "provisioning"
    (ds,) = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
