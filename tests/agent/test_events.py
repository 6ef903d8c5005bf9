"""flk_fast.agent.events: CSV / JSONL parsing, original cell text, windows, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from flk_fast.agent.events import Events, canonical_row, read_events
from flk_fast.errors import InputError

VECTOR = str(Path(__file__).resolve().parents[1] / "vectors" / "tiny_case_1.csv")


def one(text: str, **kw: object) -> Events:
    return Events.concat(read_events(io.StringIO(text), **kw))  # type: ignore[arg-type]


def test_csv_keeps_original_cell_text() -> None:
    ev = one("timestamp,x,y,z\n1,0.10,2e0,-0\n2.5,3,4.000,5\n")
    assert ev.cells == (("0.10", "2e0", "-0"), ("3", "4.000", "5"))
    np.testing.assert_array_equal(ev.points, [[0.1, 2.0, -0.0], [3, 4, 5]])
    assert ev.canonical_bytes() == b"1.000000000,0.10,2e0,-0\n2.500000000,3,4.000,5"
    assert ev.lines == (2, 3)


def test_header_columns_by_name_and_crlf() -> None:
    ev = one("z,timestamp,y,x,extra\r\n3,1,2,1.5,zz\r\n")
    assert ev.cells == (("1.5", "2", "3"),)
    assert ev.t.tolist() == [1.0]


def test_jsonl_keeps_number_text() -> None:
    ev = one(
        '{"timestamp": 1, "x": 0.10, "y": 2E-1, "z": 3}\n\n'
        '{"timestamp": 2.0, "x": 1, "y": 2, "z": 3, "extra": "ok"}\n'
    )
    assert ev.cells == (("0.10", "2E-1", "3"), ("1", "2", "3"))
    assert ev.lines == (1, 3)


def test_windows_stream_in_order() -> None:
    text = "timestamp,x,y,z\n" + "".join(f"{i},{i},{i},{i}\n" for i in range(10))
    sizes = [len(w) for w in read_events(io.StringIO(text), window=4)]
    assert sizes == [4, 4, 2]
    assert one(text).t.tolist() == list(map(float, range(10)))


def test_vector_file() -> None:
    ev = one(Path(VECTOR).read_text(encoding="utf-8"))
    assert len(ev) == 15
    assert ev.canonical_rows()[0] == b"1.000000000,0.1,0.2,0.3"
    assert next(read_events(VECTOR)).canonical_bytes() == ev.canonical_bytes()


def test_canonical_row() -> None:
    assert canonical_row(1.23456789012, "a", "b", "c") == "1.234567890,a,b,c"


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("", 1, "empty input"),
        ("timestamp,x,y\n1,2,3\n", 1, "missing z"),
        ("timestamp,x,y,z\n1,2,3,4\n1,2,3\n", 3, "expected 4 columns"),
        ("timestamp,x,y,z\n1,2,x3,4\n", 2, "y is not a number: 'x3'"),
        ("timestamp,x,y,z\nnow,2,3,4\n", 2, "timestamp is not a number"),
        ("timestamp,x,y,z\n1,2,nan,4\n", 2, "not finite"),
        ("timestamp,x,y,z\n1,2,3,inf\n", 2, "not finite"),
    ],
)
def test_csv_errors_name_the_line(text: str, line: int, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        one(text, format="csv")
    assert info.value.position == line


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ('{"timestamp": 1, "x": 1, "y": 2}\n', 1, "missing field 'z'"),
        ('{"timestamp": 1, "x": 1, "y": 2, "z": 3}\n[1]\n', 2, "JSON object"),
        ('{"timestamp": 1, "x": 1, "y": 2, "z": 3}\n{bad\n', 2, "not a JSON object"),
        ('{"timestamp": 1, "x": "1", "y": 2, "z": 3}\n', 1, "must be a JSON number"),
        ('{"timestamp": 1, "x": NaN, "y": 2, "z": 3}\n', 1, "not a JSON object"),
        ('{"timestamp": 1, "x": true, "y": 2, "z": 3}\n', 1, "must be a JSON number"),
        ("\n\n", 1, "empty input"),
    ],
)
def test_jsonl_errors_name_the_line(text: str, line: int, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        one(text, format="jsonl")
    assert info.value.position == line


def test_paths_detect_format(tmp_path) -> None:  # type: ignore[no-untyped-def]
    j = tmp_path / "e.jsonl"
    j.write_text('{"timestamp": 1, "x": 1, "y": 2, "z": 3}\n')
    assert one_path(j).cells == (("1", "2", "3"),)
    c = tmp_path / "e.txt"
    c.write_text("timestamp,x,y,z\n1,1,2,3\n")
    assert one_path(c).cells == (("1", "2", "3"),)
    with pytest.raises(InputError, match="cannot read"):
        one_path(tmp_path / "missing.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"timestamp,x,y,z\n1,\xe9,2,3\n")
    with pytest.raises(InputError, match="UTF-8"):
        one_path(bad)


def one_path(path: object) -> Events:
    return Events.concat(read_events(path))  # type: ignore[arg-type]
