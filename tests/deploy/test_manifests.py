"""deploy/: manifests parse, probes hit real routes, dashboards use real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from flk_fast.metrics import ServerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


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


def test_k8s_manifests(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "flk-server.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
    }
    c = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]
    assert hpa["target"]["averageUtilization"] == 70
    toml_text = kinds["ConfigMap"]["data"]["flk.toml"]
    import tomllib

    from flk_fast.server.config import load_config

    path = tmp_path / "flk.toml"
    path.write_text(toml_text)
    tomllib.loads(toml_text)
    assert load_config({"config": str(path)}, env={}).port == 8080


def test_prometheus_config_and_rules() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert cfg["scrape_configs"][0]["metrics_path"] == "/metrics"
    rules_text = (DEPLOY / "prometheus" / "flk-rules.yml").read_text()
    rules = yaml.safe_load(rules_text)
    assert any(
        r.get("alert") == "FlkEscalationRateAboveSLO"
        for g in rules["groups"]
        for r in g["rules"]
    )
    used = _used_metrics(rules_text)
    assert used and used <= _families() | {"flk:escalation_ratio:rate5m"}, used


def test_grafana_dashboard() -> None:
    text = (DEPLOY / "grafana" / "flk-dashboard.json").read_text()
    dash = json.loads(text)
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for wanted in (
        "ingest rate",
        "accept vs escalate",
        "dedup hit ratio",
        "error rates",
        "slo",
    ):
        assert wanted in titles, wanted
    used = _used_metrics(text)
    assert used <= _families(), used - _families()
