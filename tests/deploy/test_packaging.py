"""What a developer meets first: the README's Development install on a fresh clone,
``tox -e bench``, and a build without OpenMP (Apple clang) that still works."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.deploy.conftest import ROOT


def _readme_dev_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Development\n```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines()]


def test_readme_installs_the_build_requirements_first() -> None:
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    first, second = _readme_dev_commands()[:2]
    assert set(shlex.split(first.split("pip install", 1)[1])) == set(build["requires"])
    assert "--no-build-isolation" in second


def test_tox_bench_runs_a_module_that_exists() -> None:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    command = tox["testenv:bench"]["commands"].strip()
    default = re.fullmatch(r"python -m \{posargs:(.+)\}", command)
    assert default, command
    module, *args = default.group(1).split()
    assert (ROOT / (module.replace(".", "/") + ".py")).exists(), module
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True
    )
    assert out.returncode == 0, out.stderr
    for flag in args[::2]:
        assert flag.encode() in out.stdout, flag


@pytest.mark.slow
def test_build_without_openmp_runs_the_threaded_kernel_on_one_thread(
    tmp_path: Path,
) -> None:
    """FLK_FAST_OPENMP=0 stands for a compiler without -fopenmp: the kernel that
    ``cimport``s openmp still builds, links no OpenMP runtime, and is right."""
    proj = tmp_path / "proj"
    for name in ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, proj / name if proj.exists() else _mk(proj) / name)
    shutil.copytree(
        ROOT / "src",
        proj / "src",
        ignore=shutil.ignore_patterns("*.so", "__pycache__", "_version.py"),
    )
    (proj / "ext").mkdir()
    for f in [*(ROOT / "ext").glob("*.h"), ROOT / "ext" / "_hist_cy.pyx"]:
        shutil.copy(f, proj / "ext")
    env = {
        **os.environ,
        "FLK_FAST_OPENMP": "0",
        "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_FLK_FAST": "0.0.0",
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",
            "--no-deps",
            "-w",
            str(tmp_path / "wheel"),
            str(proj),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "openmp=False" in out.stdout + out.stderr  # setup.py's build line
    (wheel,) = (tmp_path / "wheel").glob("flk_fast-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    (so,) = (tmp_path / "site" / "flk_fast" / "kernels").glob("_hist_cy*.so")
    ldd = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
    assert "gomp" not in ldd and "libomp" not in ldd, ldd
    rng = np.random.default_rng(7)
    points = rng.normal(size=(50_000, 3))  # several 16 384-row chunks
    dirs = rng.normal(size=(5, 3))
    np.save(tmp_path / "p.npy", points)
    np.save(tmp_path / "d.npy", dirs)
    p_npy, d_npy = str(tmp_path / "p.npy"), str(tmp_path / "d.npy")
    check = (
        "import numpy as np, sys; from flk_fast.kernels import _hist_cy as h; "
        f"p = np.load({p_npy!r}); d = np.load({d_npy!r}); "
        "lo, hi = h.minmax_f64(p, d, 4); proj = p @ d.T; "
        "sys.exit(not (np.allclose(lo, proj.min(0)) and np.allclose(hi, proj.max(0))))"
    )
    run = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr


def _mk(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.slow
def test_a_build_without_the_extension_sources_fails_instead_of_going_pure(
    tmp_path: Path,
) -> None:
    """No ext/_*_cy.pyx (a broken sdist or checkout): the build stops with a message,
    it does not install a package whose kernels cannot load."""
    proj = _mk(tmp_path / "proj")
    for name in ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, proj / name)
    shutil.copytree(
        ROOT / "src",
        proj / "src",
        ignore=shutil.ignore_patterns("*.so", "__pycache__", "_version.py"),
    )
    (proj / "ext").mkdir()
    env = {**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_FLK_FAST": "0.0.0"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(proj),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode != 0
    assert "no ext/_*_cy.pyx found" in out.stdout + out.stderr
    assert not list(tmp_path.glob("*.whl"))


@pytest.mark.slow
def test_readme_development_install_works_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    for command in _readme_dev_commands()[:2]:
        out = subprocess.run(
            ["bash", "-c", command],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert out.returncode == 0, (
            command + "\n" + out.stdout[-2000:] + out.stderr[-3000:]
        )
    out = subprocess.run(
        [str(clone / ".venv" / "bin" / "flk"), "--version"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "compiled kernels: _" in out.stdout, out.stdout
