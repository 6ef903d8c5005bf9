"""The container image: the Dockerfile's install steps (scripts/install-flk.sh) run for
real in a fresh venv, and the installed server runs the way the image runs it (its
ENV, CMD, HEALTHCHECK, STOPSIGNAL, non-root data volume, read-only root)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.deploy.conftest import DEPLOY, ROOT
from tests.deploy.options import SERVE_ENV

DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTALL = ROOT / "scripts" / "install-flk.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _only(word: str) -> str:
    (found,) = [rest for w, rest in instructions() if w == word]
    return found


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for w, rest in instructions():
        if w == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def test_dockerfile_is_multi_stage_non_root_with_a_volume() -> None:
    stages = [rest for w, rest in instructions() if w == "FROM"]
    assert [s.split()[-1] for s in stages] == ["build", "runtime"]
    runs = " ".join(rest for w, rest in instructions() if w == "RUN")
    assert "scripts/install-flk.sh wheels /wheels" in runs
    assert "install-flk.sh runtime /wheels /opt/flk" in runs
    assert _only("USER") == "10001:10001"  # = runAsUser of deploy/k8s
    sts = (DEPLOY / "k8s" / "base" / "statefulset.yaml").read_text()
    assert "runAsUser: 10001" in sts
    assert json.loads(_only("VOLUME")) == [image_env()["FLK_DATA_DIR"]]
    assert _only("STOPSIGNAL") == "SIGTERM"
    assert "/health" in _only("HEALTHCHECK")
    assert json.loads(_only("ENTRYPOINT")) == ["flk"]
    flk_env = {k for k in image_env() if k.startswith("FLK_")}
    assert flk_env <= SERVE_ENV, flk_env - SERVE_ENV


def test_dockerignore_keeps_what_the_wheel_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "**/.venv*"} <= ignored
    for needed in (
        "pyproject.toml",
        "setup.py",
        "MANIFEST.in",
        "README.md",
        "ext",
        "src",
        "scripts",
    ):
        assert (ROOT / needed).exists() and needed not in ignored, needed


def test_install_script_refuses_bad_usage(tmp_path: Path) -> None:
    out = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr
    out = subprocess.run(
        ["bash", str(INSTALL), "runtime", str(tmp_path), str(tmp_path / "v")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "no flk_fast wheel" in out.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's two install steps, in a fresh venv: returns the runtime venv."""
    work = tmp_path_factory.mktemp("image")
    subprocess.run([sys.executable, "-m", "venv", str(work / "build-venv")], check=True)
    env = {
        **os.environ,
        "PATH": f"{work / 'build-venv' / 'bin'}:{os.environ['PATH']}",
        "FLK_VERSION": "9.9.9",
    }
    env.pop("VIRTUAL_ENV", None)
    for step in (
        ["wheels", str(work / "wheels")],
        ["runtime", str(work / "wheels"), str(work / "opt")],
    ):
        out = subprocess.run(
            ["bash", str(INSTALL), *step],
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert out.returncode == 0, out.stdout + out.stderr
    assert "flk_fast 9.9.9" in out.stdout  # the version the build argument names
    assert "compiled kernels: _" in out.stdout
    return work / "opt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need_mount_namespace() -> None:
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        message = "unshare --mount is not permitted here (needs CAP_SYS_ADMIN)"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (FLK_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message)


def _read_only_root(data: Path, argv: list[str]) -> list[str]:
    """``argv`` in a private mount namespace whose root filesystem is read-only except
    ``data`` (the image's VOLUME), like ``docker run --read-only``."""
    script = (
        "set -e; mount --make-rprivate /; "
        f"mount --bind {shlex.quote(str(data))} {shlex.quote(str(data))}; "
        "mount -o remount,ro,bind /; " + " ".join(map(shlex.quote, ["exec", *argv]))
    )
    return ["unshare", "--mount", "sh", "-c", script]


def test_read_only_root_is_read_only_but_the_volume(tmp_path: Path) -> None:
    _need_mount_namespace()
    data = tmp_path / "data"
    data.mkdir()
    probe = "touch {d}/ok && ! touch {t}/nope 2>/dev/null && ! touch /nope 2>/dev/null"
    argv = ["sh", "-c", probe.format(d=data, t=tmp_path)]
    assert subprocess.run(_read_only_root(data, argv)).returncode == 0
    assert (data / "ok").exists() and not (tmp_path / "nope").exists()


@pytest.fixture
def image_server(
    installed: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    _need_mount_namespace()
    data = tmp_path / "data"
    data.mkdir()
    key = tmp_path / "hmac.key"
    key.write_text("k" * 32)
    env = {
        k: v.replace("/opt/flk", str(installed)).replace("$PATH", os.environ["PATH"])
        for k, v in image_env().items()
    }
    env.update(
        FLK_HOST="127.0.0.1",
        FLK_PORT=str(_free_port()),
        FLK_DATA_DIR=str(data),
        FLK_HMAC_KEY_FILE=str(key),
        HOME="/nonexistent",
    )
    argv = [str(installed / "bin" / "flk"), *json.loads(_only("CMD"))]
    proc = subprocess.Popen(
        _read_only_root(data, argv),
        env=env,
        cwd=str(data),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"event":"ready"' in line:
                break
        else:
            raise AssertionError(f"server exited {proc.wait()} before it was ready")
        yield proc, env
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _healthcheck(env: dict[str, str]) -> int:
    cmd = json.loads(_only("HEALTHCHECK").split("CMD", 1)[1])
    return subprocess.run(cmd, env=env, capture_output=True, timeout=10).returncode


@pytest.mark.slow
def test_installed_server_runs_like_the_image(
    image_server: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    proc, env = image_server
    assert _healthcheck(env) == 0
    assert any(Path(env["FLK_DATA_DIR"]).iterdir())  # the inbox WAL, on the volume
    proc.send_signal(getattr(signal, _only("STOPSIGNAL")))
    assert proc.wait(30) == 0
    assert _healthcheck(env) != 0
