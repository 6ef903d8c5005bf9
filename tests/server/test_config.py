"""Config precedence (flags > FLK_* env > TOML > defaults), validation, secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flk_fast.cli import build_parser
from flk_fast.errors import ConfigError
from flk_fast.server.config import OPTIONS, ServerConfig, load_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def test_defaults() -> None:
    cfg = load_config({}, env={})
    assert (cfg.host, cfg.port, cfg.workers, cfg.sign_alg) == (
        "127.0.0.1",
        8080,
        1,
        "hmac",
    )
    assert cfg.max_body == 1 << 20
    assert cfg.dedup_ttl_s == 14 * 86400
    assert cfg.dedup_url.startswith("lmdb:///") and cfg.dedup_url.endswith("/dedup")


def test_precedence_flag_over_env_over_toml(tmp_path: Path) -> None:
    toml = tmp_path / "flk.toml"
    toml.write_text(
        '[serve]\nport = 7000\nhost = "0.0.0.0"\nworkers = 3\nwal-sync = false\n'
    )
    env = {"FLK_CONFIG": str(toml), "FLK_PORT": "7001", "FLK_WORKERS": "2"}
    cfg = load_config({"port": 7002}, env=env)
    assert cfg.port == 7002  # flag
    assert cfg.workers == 2  # env beats TOML
    assert cfg.host == "0.0.0.0"  # TOML beats default
    assert cfg.wal_sync is False
    assert load_config({}, env=env).port == 7001


@pytest.mark.parametrize(
    "env,message",
    [
        ({"FLK_PORT": "http"}, "port"),
        ({"FLK_PORT": "70000"}, "--port"),
        ({"FLK_SIGN_ALG": "rsa"}, "--sign-alg"),
        ({"FLK_WORKERS": "0"}, "--workers"),
        ({"FLK_WAL_SYNC": "maybe"}, "wal_sync"),
        ({"FLK_TLS_CERT": "c.pem"}, "--tls-cert"),
        ({"FLK_METRICS_USER": "prom"}, "--metrics-user"),
        ({"FLK_DRAIN_TIMEOUT_S": "nan"}, "--drain-timeout-s"),
        ({"FLK_DRAIN_TIMEOUT_S": "-1"}, "--drain-timeout-s"),
        ({"FLK_DRAIN_TIMEOUT_S": "inf"}, "--drain-timeout-s"),
        ({"FLK_RETRY_AFTER_S": "-5"}, "--retry-after-s"),
        ({"FLK_HOST": ""}, "--host"),
        ({"FLK_HOST": "  "}, "--host"),
        ({"FLK_METRICS_PASSWORD": "pw"}, "FLK_METRICS_PASSWORD"),
        ({"FLK_RATE_LIMIT": "nan"}, "--rate-limit"),
        ({"FLK_TENANT_RATE_LIMIT": "inf"}, "--tenant-rate-limit"),
        ({"FLK_RATE_BURST": "-1"}, "--rate-burst"),
        ({"FLK_TENANT_RATE_BURST": "-1"}, "--tenant-rate-burst"),
        ({"FLK_BODY_TIMEOUT_S": "0"}, "--body-timeout-s"),
        ({"FLK_MAX_INFLIGHT_BODIES": "0"}, "--max-inflight-bodies"),
    ],
)
def test_bad_values_name_the_option(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({}, env=env)


def test_unknown_toml_key(tmp_path: Path) -> None:
    toml = tmp_path / "flk.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'prot'"):
        load_config({"config": str(toml)}, env={})


def test_secret_never_from_flags_nor_in_repr() -> None:
    with pytest.raises(ConfigError, match="FLK_METRICS_PASSWORD"):
        load_config({"metrics_password": "x"}, env={})
    cfg = load_config(
        {},
        env={
            "FLK_METRICS_USER": "prom",
            "FLK_METRICS_PASSWORD": "hunter2",
            "FLK_DEDUP": "redis://:s3cret@db:6379/0",
        },
    )
    assert "hunter2" not in repr(cfg)
    public = repr(cfg.public())
    assert "hunter2" not in public and "s3cret" not in public
    with pytest.raises(ConfigError, match="FLK_AUDIT_DSN"):
        load_config({"audit_dsn": "postgresql://u:pw@h/db"}, env={})
    for url in (
        "redis://:pa/ss@db:6379/0",
        "postgresql://u:p@ss@h/db",
        "redis://db:6379/0?password=s3cret&db=1",
        "postgresql://u@h/db?passwd=s3cret",
    ):
        cfg = load_config({"dedup": url}, env={"FLK_AUDIT_DSN": "host=h password=pw"})
        public = repr(cfg.public())
        assert "s3cret" not in public and "ss@" not in public and "pa/" not in public
        assert "pw" not in public and "'audit_dsn': '<set>'" in public


def test_cli_flags_cover_every_option() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "serve",
            "--port",
            "9",
            "--no-wal-sync",
            "--sign-alg",
            "none",
            "--workers",
            "2",
        ]
    )
    assert (args.port, args.wal_sync, args.sign_alg, args.workers) == (
        9,
        False,
        "none",
        2,
    )
    assert args.host is None  # "not given" so env/TOML may still decide
    assert ServerConfig().port == load_config({}, env={}).port


def test_docs_table_lists_every_option() -> None:
    text = DOCS.read_text()
    for opt in OPTIONS:
        if opt.cli:
            assert f"`{opt.flag}`" in text, opt.flag
        assert f"`{opt.env}`" in text, opt.env


def test_redact_masks_url_passwords() -> None:
    from flk_fast.server.config import redact

    text = "cannot reach redis://:s3cret@db:6379/0 or postgresql://u:pw@h/db (u@h)"
    out = redact(text)
    assert "s3cret" not in out and "pw@" not in out
    assert "redis://:***@db:6379/0" in out and "postgresql://u:***@h/db" in out
