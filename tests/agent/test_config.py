"""``flk agent`` configuration: flags > FLK_AGENT_* > [agent] of --config > defaults,
through the shared flk_fast.config (the server uses it too)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk_fast.cli import agent as cli_agent
from flk_fast.cli import main
from flk_fast.config import parse_bool
from flk_fast.errors import ConfigError

from .realserver import Server

BASE = ["agent", "--in", "-", "--shard-id", "s", "--data-dir", "d"]


def parse(
    argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> argparse.Namespace:
    for key in [k for k in __import__("os").environ if k.startswith("FLK_AGENT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    cli_agent.register(parser.add_subparsers())
    ns = parser.parse_args(argv)
    cli_agent._resolve(ns)
    return ns


def test_flag_over_env_over_toml_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text(
        '[agent]\nendpoint = "http://toml:1"\nwindow = 300\nconcurrency = 3\n'
        'hmac-key-file = "k"\nfollow = true\nretry_base = 0.5\n'
    )
    env = {
        "FLK_AGENT_CONFIG": str(toml),
        "FLK_AGENT_WINDOW": "200",
        "FLK_AGENT_CONCURRENCY": "4",
    }
    ns = parse([*BASE, "--concurrency", "5"], env, monkeypatch)
    assert (ns.endpoint, ns.window, ns.concurrency) == ("http://toml:1", 200, 5)
    assert (ns.follow, ns.retry_base, ns.hmac_key_file) == (True, 0.5, "k")
    assert (ns.max_retries, ns.format, ns.no_sync) == (5, "auto", False)  # defaults
    # --config as a flag works the same, and beats FLK_AGENT_CONFIG.
    other = tmp_path / "other.toml"
    other.write_text('endpoint = "http://top-level:2"\nhmac_key_file = "k"\n')
    ns = parse([*BASE, "--config", str(other)], env, monkeypatch)
    assert (ns.endpoint, ns.window) == ("http://top-level:2", 200)


def test_required_options_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "FLK_AGENT_ENDPOINT": "http://e:1",
        "FLK_AGENT_INPUT": "-",
        "FLK_AGENT_SHARD_ID": "s9",
        "FLK_AGENT_DATA_DIR": "dd",
        "FLK_AGENT_HMAC_KEY_ENV": "K",
        "FLK_AGENT_FOLLOW": "Yes",
    }
    ns = parse(["agent"], env, monkeypatch)
    assert (ns.endpoint, ns.input, ns.shard_id, ns.data_dir) == (
        "http://e:1",
        "-",
        "s9",
        "dd",
    )
    assert ns.follow is True and ns.hmac_key_env == "K"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            BASE,
            {"FLK_AGENT_HMAC_KEY_FILE": "k"},
            r"--endpoint is required \(or "
            r"FLK_AGENT_ENDPOINT",
        ),
        ([*BASE, "--endpoint", "http://e"], {}, "exactly one of --hmac-key-file"),
        (
            [*BASE, "--endpoint", "http://e", "--hmac-key-file", "k"],
            {"FLK_AGENT_ED25519_KEY_FILE": "e"},
            "got 2",
        ),
        (
            [*BASE, "--endpoint", "http://e", "--hmac-key-file", "k"],
            {"FLK_AGENT_WINDWO": "5"},
            "FLK_AGENT_WINDWO; did you mean FLK_AGENT_WINDOW",
        ),
        (
            [*BASE, "--endpoint", "http://e", "--hmac-key-file", "k"],
            {"FLK_AGENT_WINDOW": "0"},
            r"window \(from FLK_AGENT_WINDOW\)",
        ),
        (
            [*BASE, "--endpoint", "http://e", "--hmac-key-file", "k"],
            {"FLK_AGENT_FOLLOW": "maybe"},
            r"follow \(from FLK_AGENT_FOLLOW\)",
        ),
        (
            [*BASE, "--endpoint", "http://e", "--hmac-key-file", "k"],
            {"FLK_AGENT_FORMAT": "xml"},
            "--format .*not one of auto, csv, jsonl",
        ),
    ],
)
def test_bad_configuration_names_what_is_wrong(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(argv, env, monkeypatch)


def test_misspelt_toml_key_names_the_closest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text("[agent]\nconcurency = 3\n")
    with pytest.raises(ConfigError, match="'concurency'.*did you mean concurrency"):
        parse([*BASE, "--config", str(toml)], {}, monkeypatch)
    toml.write_text("[agent\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse([*BASE, "--config", str(toml)], {}, monkeypatch)
    with pytest.raises(ConfigError, match="cannot read"):
        parse([*BASE, "--config", str(tmp_path / "nope.toml")], {}, monkeypatch)


@given(st.sampled_from(["1", "true", "YES", " on ", "0", "False", "no", "OFF", ""]))
def test_parse_bool_matches_the_table(text: str) -> None:
    assert parse_bool(text) is (text.strip().lower() in ("1", "true", "yes", "on"))


@given(st.text(max_size=8))
def test_parse_bool_refuses_everything_else(text: str) -> None:
    words = {"1", "true", "yes", "on", "0", "false", "no", "off", ""}
    if text.strip().lower() in words:
        assert isinstance(parse_bool(text), bool)
    else:
        with pytest.raises(ValueError, match="not a boolean"):
            parse_bool(text)


def test_agent_runs_from_env_and_toml_only(
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "ev.csv"
    src.write_text("".join(f"{i},0.{i % 10},0.{i % 7},0.{i % 3}\n" for i in range(300)))
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'[agent]\nendpoint = "{server.url}"\nhmac_key_file = "{server.key}"\n'
        'window = 100\nsummarizer = "tests.agent.plainsum:factory"\n'
        'progress = "off"\nexit_when_drained = true\n'
    )
    monkeypatch.setenv("FLK_AGENT_CONFIG", str(toml))
    monkeypatch.setenv("FLK_AGENT_INPUT", str(src))
    monkeypatch.setenv("FLK_AGENT_SHARD_ID", "s1")
    monkeypatch.setenv("FLK_AGENT_DATA_DIR", str(tmp_path / "agent"))
    assert main(["agent"]) == 0
    assert "sent=3 accepted=3" in capsys.readouterr().out


def test_docs_name_every_agent_option_and_the_table_lists_its_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = parse(
        [*BASE, "--endpoint", "http://e", "--hmac-key-file", "k"], {}, monkeypatch
    )
    schema = ns.flk_schema
    doc = (Path(__file__).parents[2] / "docs" / "agent.md").read_text()
    assert [o.flag for o in schema.options if f"`{o.flag}" not in doc] == []
    table = schema.docs_table()
    for opt in schema.options:
        assert f"`{opt.flag}` | `{schema.env_name(opt)}`" in table


def test_server_shares_the_parser_and_the_suggestions(tmp_path: Path) -> None:
    from flk_fast.server.config import load_config

    toml = tmp_path / "s.toml"
    toml.write_text("[serve]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'prot'.*did you mean port"):
        load_config({}, env={"FLK_CONFIG": str(toml)})
    cfg = load_config({}, env={"FLK_WAL_SYNC": "Off", "FLK_PORT": "7002"})
    assert (cfg.wal_sync, cfg.port) == (False, 7002)


def test_public_masks_secrets_and_url_passwords() -> None:
    from flk_fast.config import Option, Schema

    schema = Schema(
        (Option("dsn", str, "", "d"), Option("password", str, "", "p", cli=False,
                                             secret=True)),
        "FLK_X_", "x",
    )  # fmt: skip
    shown = schema.public({"dsn": "redis://u:hunter2@h/0", "password": "pw"})
    assert shown == {"dsn": "redis://u:***@h/0", "password": "<set>"}
    with pytest.raises(ConfigError, match="use FLK_X_PASSWORD"):
        schema.resolve({"password": "pw"}, {})
