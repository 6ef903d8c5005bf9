"""Helpers of the deploy/ tests: the tools they run (kubectl, promtool, prometheus) and
rendered Kustomize overlays."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("embedded", "scaled", "scaled-tls")


def need_tool(name: str, package: str) -> str:
    """The path of ``name``; fails (CI) or skips (laptop) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} is needed by this test but not installed "
            f"(apt-get install {package}; scripts/services.sh does it)"
        )
        if REQUIRE_SERVICES:
            pytest.fail(message + " (FLK_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message + " (FLK_REQUIRE_SERVICES=0)")
    return path


def render(overlay: str, work: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of one overlay, on a copy of deploy/k8s whose generated
    Secrets get the files docs/deploy.md tells users to create."""
    kubectl = need_tool("kubectl", "kubernetes-client")
    tree = work / f"k8s-{overlay}"
    shutil.copytree(DEPLOY / "k8s", tree, ignore=shutil.ignore_patterns("hmac.key"))
    (tree / "overlays" / "embedded" / "secrets" / "hmac.key").write_text("k" * 32)
    out = subprocess.run(
        [kubectl, "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="session")
def rendered(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[dict[str, Any]]]:
    work = tmp_path_factory.mktemp("kustomize")
    return {o: render(o, work) for o in OVERLAYS}
