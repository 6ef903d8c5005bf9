"""deploy/k8s: every overlay renders with the real ``kubectl kustomize``, validates
strictly against the Kubernetes schemas, and only uses what ``flk serve`` accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flk_fast.server.config import OPTIONS, load_config
from tests.deploy.conftest import DEPLOY, OVERLAYS, ROOT
from tests.deploy.options import SERVE_ENV, parse_serve, routes

#: Kinds of the Prometheus Operator and cert-manager: not in the bundled schemas.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Certificate"}
K8S_VERSION = "1.30.0"


def _kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _kinds(docs).get(kind, [])
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "StatefulSet")["spec"]["template"]


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = _pod(docs)["spec"]["containers"]
    return c


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(rendered: dict[str, Any], overlay: str) -> None:
    docs = rendered[overlay]
    assert {d["kind"] for d in docs} >= {"StatefulSet", "Service", "ConfigMap"}
    for d in docs:
        if d["kind"] in CRD_KINDS:
            continue
        # Raises ValidationError naming the field (strict: unknown fields too).
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_typo(rendered: dict[str, Any]) -> None:
    sts = _one(rendered["embedded"], "StatefulSet")
    bad = yaml.safe_load(yaml.safe_dump(sts))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_args_env_and_config_are_what_flk_serve_accepts(
    rendered: dict[str, Any], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    c = _container(docs)
    args = parse_serve(c["args"])  # SystemExit on an unknown flag or a bad value
    unknown = {e["name"] for e in c.get("env", [])} - SERVE_ENV
    assert not unknown, f"flk serve reads no {unknown}"
    # The ConfigMap the --config flag points at, loaded by the real loader.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert args.config in mounts, args.config
    cm = _one(docs, "ConfigMap")
    toml_text = cm["data"][mounts[args.config]["subPath"]]
    tomllib.loads(toml_text)
    path = tmp_path / "flk.toml"
    path.write_text(toml_text)
    cli = {o.name: getattr(args, o.name) for o in OPTIONS if o.cli}
    plain_env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    cfg = load_config({**cli, "config": str(path)}, env=plain_env)
    # Without tenants-dir every request is the default tenant: a per-tenant limit
    # would then cap the whole pod at one bucket (the old manifest's 500 req/s).
    assert not (cfg.tenant_rate_limit and not cfg.tenants_dir)
    # Every file the config names lives on a mounted volume.
    for f in (cfg.hmac_key_file, cfg.tls_cert, cfg.tls_key):
        if f:
            assert any(f.startswith(m + "/") for m in mounts), f
    assert cfg.data_dir in mounts and mounts[cfg.data_dir]["name"] == "data"
    spec = _pod(docs)["spec"]
    assert spec["terminationGracePeriodSeconds"] > cfg.drain_timeout_s
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert port == cfg.port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_scrapes_hit_real_routes(
    rendered: dict[str, Any], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    served = routes(tmp_path)
    c = _container(docs)
    tls = bool(parse_serve(c["args"]).tls_cert)
    ports = {p["name"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in served, (probe, get["path"])
        assert get["port"] in ports
        assert get.get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP"), probe
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"  # 503 when dedup is down
    for sm in _kinds(docs).get("ServiceMonitor", []):
        svc_ports = {
            p["name"] for s in _kinds(docs)["Service"] for p in s["spec"]["ports"]
        }
        for ep in sm["spec"]["endpoints"]:
            assert ep["path"] in served and ep["port"] in svc_ports
            assert ep.get("scheme", "http") == ("https" if tls else "http")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_volumes_image_and_secrets(
    rendered: dict[str, Any], overlay: str
) -> None:
    docs = rendered[overlay]
    kinds = _kinds(docs)
    pod = _pod(docs)
    labels = pod["metadata"]["labels"]
    sts = _one(docs, "StatefulSet")

    def selects(sel: dict[str, str]) -> bool:
        return bool(sel) and sel.items() <= labels.items()

    assert selects(sts["spec"]["selector"]["matchLabels"])
    for s in kinds["Service"]:
        assert selects(s["spec"]["selector"]), s["metadata"]["name"]
    assert sts["spec"]["serviceName"] in {
        s["metadata"]["name"] for s in kinds["Service"]
    }
    for pdb in kinds.get("PodDisruptionBudget", []):
        assert selects(pdb["spec"]["selector"]["matchLabels"])
    for np_ in kinds.get("NetworkPolicy", []):
        assert selects(np_["spec"]["podSelector"]["matchLabels"])
    for hpa in kinds.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("StatefulSet", sts["metadata"]["name"])
    # Every mount has a volume; the data dir is a PVC per pod.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    for m in _container(docs)["volumeMounts"]:
        assert m["name"] in volumes or m["name"] in claims, m
    assert claims == {"data"}
    # The image is the base kustomization's one images: entry.
    base = yaml.safe_load((DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text())
    (image,) = base["images"]
    assert _container(docs)["image"] == f"{image['newName']}:{image['newTag']}"
    # Secrets: generated ones are in the output; referenced ones are documented.
    generated = {d["metadata"]["name"] for d in kinds.get("Secret", [])}
    referenced = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    referenced |= {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in _container(docs).get("env", [])
        if "valueFrom" in e
    }
    docs_text = (ROOT / "docs" / "deploy.md").read_text()
    for name in referenced - generated:
        if any(c["spec"]["secretName"] == name for c in kinds.get("Certificate", [])):
            continue  # cert-manager makes it
        assert re.search(rf"kubectl create secret generic {name}\b", docs_text), name


def test_embedded_is_one_replica_scaled_shares_a_dedup_store(
    rendered: dict[str, Any],
) -> None:
    emb, scaled = rendered["embedded"], rendered["scaled"]
    assert _one(emb, "StatefulSet")["spec"]["replicas"] == 1
    assert "HorizontalPodAutoscaler" not in _kinds(emb)
    assert not [e for e in _container(emb).get("env", []) if e["name"] == "FLK_DEDUP"]
    assert _one(emb, "Secret")["metadata"]["name"].startswith("flk-server-keys-")
    assert _one(scaled, "StatefulSet")["spec"]["replicas"] >= 2
    (dedup,) = [e for e in _container(scaled)["env"] if e["name"] == "FLK_DEDUP"]
    assert dedup["valueFrom"]["secretKeyRef"]["name"] == "flk-dedup"
    hpa = _one(scaled, "HorizontalPodAutoscaler")["spec"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["target"]["averageUtilization"] == 70
    for kind in ("PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"):
        _one(scaled, kind)
    assert _one(rendered["scaled-tls"], "Certificate")["spec"]["secretName"] == (
        "flk-server-tls"
    )


def test_prometheus_rule_is_the_rules_file(rendered: dict[str, Any]) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "flk-rules.yml").read_text())
    assert _one(rendered["scaled"], "PrometheusRule")["spec"] == rules
