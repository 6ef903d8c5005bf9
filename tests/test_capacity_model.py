"""bench/capacity.py: the Redis Cluster table follows from the benchmark JSON read."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from bench import capacity

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
DAY = 86_400


def _results(tmp: Path, redis_lines: list[dict[str, object]] | None) -> Path:
    for name in ("server.jsonl", "pg_writes.json", "pg_sweep_10m.json"):
        shutil.copy(RESULTS / name, tmp / name)
    if redis_lines is not None:
        (tmp / "replicas.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in redis_lines)
        )
    return tmp


def _run(rec: dict[str, object], ops: float, cpu: float) -> dict[str, object]:
    return dict(rec, redis_ops_per_req=ops, redis_cpu_us_per_op=cpu)


def _mem(per_entry: float, aof: float) -> dict[str, object]:
    return {
        "label": "redis-memory/cluster",
        "entries": 1000,
        "used_memory_bytes_per_entry": per_entry,
        "aof_bytes_per_entry": aof,
    }


def _redis_row(out: str, rate: str) -> dict[str, str]:
    """The row of the Redis table (the one after 'Redis Cluster dedup') for ``rate``."""
    table = out.split("Redis Cluster dedup", 1)[1]
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if cells[0] == rate:
            return dict(zip(cols, cells, strict=True))
    raise AssertionError(f"no row {rate!r} in {table}")


def test_shards_and_memory_follow_the_medians_of_the_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pg = {"label": "replicas/pg/1", "req_per_s": 1.0}  # not a Redis record: ignored
    runs = [
        _run({"label": "replicas/redis-cluster/1"}, 1.0, 60.0),
        _run({"label": "replicas/redis-cluster/2"}, 4.0, 30.0),
        _run({"label": "replicas/redis-cluster/2"}, 2.0, 50.0),
    ]
    mems = [_mem(400, 300), _mem(700, 900), _mem(500, 400)]  # medians 500, 400
    res = _results(tmp_path, [pg, *runs, *mems])
    assert capacity.main(["--results", str(res), "--rates", "1e4,1e5"]) == 0
    out = capsys.readouterr().out
    assert "2.000 commands/req, 50 us Redis CPU per command" in out
    assert "500 B of memory and 400 B of AOF per entry" in out
    fresh = 1e4 * 0.9  # default 10 % resends
    live = fresh * 14 * DAY
    row = _redis_row(out, "10 k")
    assert row["Redis ops/s"] == "20 k"  # resends are commands too
    # one shard takes 0.6 / 50 us = 12 000 commands/s
    assert row["shards for ops"] == str(math.ceil(2e4 / 12_000))
    assert row["Redis memory"] == f"{live * 500 / 1e12:.3g} TB"
    by_mem = math.ceil(live * 500 / 25e9)
    assert row["shards for memory (25 GB)"] == f"{by_mem:,}"
    assert row["Redis Cluster shards"] == f"{by_mem:,} (memory)"
    assert row["AOF write"] == f"{fresh * 400 / 1e6:.3g} MB/s"
    big = _redis_row(out, "100 k")
    assert big["shards for memory (25 GB)"] == f"{math.ceil(10 * live * 500 / 25e9):,}"


def test_a_short_ttl_and_large_shards_make_commands_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = _results(
        tmp_path, [_run({"label": "replicas/redis-cluster/1"}, 1.0, 60.0), _mem(500, 1)]
    )
    argv = ["--results", str(res), "--rates", "1e6", "--ttl-days", "0.01"]
    assert capacity.main([*argv, "--redis-shard-gb", "1000"]) == 0
    row = _redis_row(capsys.readouterr().out, "1 M")
    by_ops = math.ceil(1e6 / 10_000)
    assert row["Redis Cluster shards"] == f"{by_ops:,} (ops)"


def test_without_redis_records_the_redis_table_is_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_pg = [{"label": "replicas/pg/1", "req_per_s": 1.0}]
    for lines in (None, only_pg, [_run({"label": "replicas/redis-cluster/1"}, 1, 1)]):
        res = _results(tmp_path, lines)
        assert capacity.main(["--results", str(res)]) == 0
        out = capsys.readouterr().out
        assert "PG dedup shards" in out  # the PostgreSQL table is still printed
        assert "Redis Cluster: no input" in out and "left out" in out
        assert "Redis Cluster shards" not in out


def test_a_redis_record_missing_a_field_names_it(tmp_path: Path) -> None:
    bad = {"label": "redis-memory/cluster", "entries": 5, "aof_bytes_per_entry": 1}
    res = _results(tmp_path, [_run({"label": "replicas/redis-cluster/1"}, 1, 1), bad])
    with pytest.raises(SystemExit, match="used_memory_bytes_per_entry"):
        capacity.main(["--results", str(res)])


def test_the_committed_results_give_both_tables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert capacity.main([]) == 0
    out = capsys.readouterr().out
    for rate in ("10 k", "100 k", "1 M"):
        row = _redis_row(out, rate)
        assert int(row["Redis Cluster shards"].split()[0].replace(",", "")) >= 1
