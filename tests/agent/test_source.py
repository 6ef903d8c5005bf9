"""agent.source and agent.windows: streaming parse with exact positions, windows."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk_fast.agent.source import (
    LineSplitter,
    parse_block,
    parse_csv_block,
    parse_jsonl_block,
    read_batch,
)
from flk_fast.agent.windows import Windower, canonical_rows
from flk_fast.errors import InputError


def spec_rows(rows: list[tuple[float, str, str, str]]) -> bytes:
    """SPEC §4.4 written the obvious way (the oracle for canonical_rows)."""
    return "\n".join(f"{t:.9f},{x},{y},{z}" for t, x, y, z in rows).encode()


def test_csv_header_and_vector_like_rows() -> None:
    block = b"timestamp,x,y,z\n1.0,0.1,0.2,0.3\n1.1,0.15,0.25,0.35\n"
    b, bad = parse_csv_block(block)
    assert bad == []
    assert b.t.tolist() == [1.0, 1.1]
    assert b.xyz.tolist() == [[0.1, 0.2, 0.3], [0.15, 0.25, 0.35]]
    assert b.tails == [b"0.1,0.2,0.3", b"0.15,0.25,0.35"]
    assert b.lines.tolist() == [2, 3]
    assert b.ends.tolist() == [32, len(block)]
    assert canonical_rows(b.t, b.tails) == spec_rows(
        [(1.0, "0.1", "0.2", "0.3"), (1.1, "0.15", "0.25", "0.35")]
    )


def test_csv_keeps_original_cell_text() -> None:
    b, _ = parse_csv_block(b"5,0.10,1e-3, 2\n", 100, 7)
    assert b.tails == [b"0.10,1e-3, 2"] and b.xyz.tolist() == [[0.1, 0.001, 2.0]]
    assert (b.ends.tolist(), b.lines.tolist()) == ([115], [7])


def test_csv_unterminated_last_line() -> None:
    b, bad = parse_csv_block(b"1,2,3,4\n5,6,7,8", 0, 3)
    assert bad == [] and b.ends.tolist() == [8, 15] and b.lines.tolist() == [3, 4]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"1,2,3", "expected 4 cells, got 3"),
        (b"1,2,3,4,5", "expected 4 cells, got 5"),
        (b"1,2,x,4", "a cell is not a number"),
        (b"1,,3,4", "a cell is not a number"),
        (b"1,nan,3,4", "a value is not finite"),
        (b"1,2,1e400,4", "a value is not finite"),
        (b"\xff,2,3,4", "not UTF-8"),
        (b"abc,1,2,3", "a cell is not a number"),  # not a header: it has numbers
    ],
)
@pytest.mark.parametrize("first_line", [1, 50])
def test_csv_malformed_reported_with_position(
    line: bytes, reason: str, first_line: int
) -> None:
    good = b"1,2,3,4\n"
    block = good + line + b"\n" + good
    b, bad = parse_csv_block(block, 1000, first_line)
    assert len(b) == 2 and b.lines.tolist() == [first_line, first_line + 2]
    (m,) = bad
    assert (m.line, m.offset) == (first_line + 1, 1000 + len(good))
    assert m.reason.startswith(reason)


def test_csv_missing_and_extra_cells_do_not_cancel_out() -> None:
    # 3 + 5 cells = 8 = 2 × 4: a value count alone would accept this block.
    b, bad = parse_csv_block(b"1,2,3\n4,5,6,7,8\n", 0, 10)
    assert len(b) == 0 and [m.line for m in bad] == [10, 11]


def test_csv_blank_lines_and_crlf() -> None:
    b, bad = parse_csv_block(b"1,2,3,4\r\n\r\n5,6,7,8\r\n", 0, 2)
    assert bad == [] and b.tails == [b"2,3,4", b"6,7,8"] and b.lines.tolist() == [2, 4]
    assert b.ends.tolist() == [9, 20]


@settings(derandomize=True, max_examples=50)
@given(
    st.lists(
        st.tuples(
            st.floats(-1e9, 1e9, allow_nan=False),
            st.floats(-1e6, 1e6, allow_nan=False),
            st.floats(-1, 1, allow_nan=False),
            st.floats(0, 1e-3, allow_nan=False),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_csv_fast_path_equals_python_float(rows: list[tuple[float, ...]]) -> None:
    texts = [[repr(v) for v in r] for r in rows]
    block = "".join(",".join(c) + "\n" for c in texts).encode()
    b, bad = parse_csv_block(block, 0, 2)
    assert bad == []
    assert b.t.tolist() == [float(c[0]) for c in texts]
    assert b.xyz.tolist() == [[float(v) for v in c[1:]] for c in texts]
    assert canonical_rows(b.t, b.tails) == spec_rows(
        [(float(c[0]), c[1], c[2], c[3]) for c in texts]
    )


def test_jsonl_keeps_number_text_and_reports_bad_lines() -> None:
    lines = [
        json.dumps({"timestamp": 1.5, "x": 0.1, "y": 2, "z": -3}),
        '{"t": 2, "x": 0.10, "y": "7", "z": 1e-3}',
        '{"x": 1, "y": 2, "z": 3}',
        "not json",
        '{"t": 3, "x": NaN, "y": 1, "z": 1}',
        "",
        '{"t": 4, "x": 1, "y": 2, "z": 3}',
    ]
    block = ("\n".join(lines) + "\n").encode()
    b, bad = parse_jsonl_block(block, 0, 1)
    assert b.tails == [b"0.1,2,-3", b"0.10,7,1e-3", b"1,2,3"]
    assert b.t.tolist() == [1.5, 2.0, 4.0] and b.lines.tolist() == [1, 2, 7]
    assert [m.line for m in bad] == [3, 4, 5]
    assert "missing timestamp" in bad[0].reason


def test_line_splitter_tracks_positions() -> None:
    sp = LineSplitter()
    assert sp.feed(b"ab") == (b"", 0, 1)
    assert sp.feed(b"c\nde\nf") == (b"abc\nde\n", 0, 1)
    assert (sp.offset, sp.line, sp.buffered) == (7, 3, 1)
    assert sp.feed(b"g", final=True) == (b"fg", 7, 3)
    assert (sp.offset, sp.line) == (9, 4)


def test_line_splitter_random_chunking_reassembles() -> None:
    rnd = random.Random(3)
    data = b"".join(b"%d,%d,%d,%d\n" % (i, i, i, i) for i in range(500))
    sp = LineSplitter()
    out = []
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, 50)
        block, off, line = sp.feed(data[pos : pos + step])
        pos += step
        if block:
            b, bad = parse_csv_block(block, off, line)
            assert not bad
            out.append(b)
    assert [int(x) for b in out for x in b.t] == list(range(500))
    ends = np.concatenate([b.ends for b in out])
    assert ends[-1] == len(data)
    assert all(data[e - 1 : e] == b"\n" for e in ends)


def _batch(n: int, start: int = 0, dt: float = 1.0):  # type: ignore[no-untyped-def]
    block = b"".join(
        b"%r,%d,%d,%d\n" % (start * dt + i * dt, i, i, i) for i in range(n)
    )
    b, _ = parse_csv_block(block, 0, 2)
    return b


def test_count_windows() -> None:
    w = Windower(4)
    out = w.push(_batch(10))
    assert [len(x) for x in out] == [4, 4] and w.pending == 2
    assert [x.end_line for x in out] == [5, 9]
    out2 = w.push(_batch(3, 10))
    assert [len(x) for x in out2] == [4] and w.pending == 1
    last = w.flush()
    assert last is not None and len(last) == 1 and w.flush() is None
    rows = out[0].rows.split(b"\n")
    assert rows[0] == b"0.000000000,0,0,0" and len(rows) == 4


def test_time_windows_cut_on_slots_and_cap() -> None:
    w = Windower(3, seconds=5.0)
    out = w.push(_batch(12, dt=1.0))  # t = 0..11: slots [0-4], [5-9], [10-11]
    assert [x.t.tolist() for x in out] == [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]
    assert w.pending == 2
    assert w.flush().t.tolist() == [10, 11]  # type: ignore[union-attr]


# -- one parser for the agent and build-pcs: header, nesting, long lines, huge values


@pytest.mark.parametrize(
    "header",
    [b"x,y,z,timestamp", b"timestamp,x,y,z,extra", b"t,x,y,z", b"timestamp,x,y"],
)
def test_csv_header_other_than_timestamp_x_y_z_is_refused(header: bytes) -> None:
    # Columns are read by position: a reordered header used to swap columns
    # silently, a wider one made every line malformed.
    with pytest.raises(InputError, match="header must be exactly timestamp,x,y,z") as e:
        parse_csv_block(header + b"\n1,2,3,4\n", source="in.csv")
    assert e.value.position == 1 and str(e.value).startswith("in.csv:1: ")


def test_csv_header_case_spaces_and_bom_are_fine() -> None:
    b, bad = parse_csv_block("\ufeffTimestamp, X ,y,Z\r\n1,2,3,4\n".encode())
    assert bad == [] and b.lines.tolist() == [2]


def test_jsonl_deep_nesting_is_a_malformed_line_not_a_crash() -> None:
    deep = b'{"t":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b',"y":1,"z":1}'
    block = b'{"t":0,"x":1,"y":2,"z":3}\n' + deep + b'\n{"t":2,"x":1,"y":2,"z":3}\n'
    b, bad = parse_jsonl_block(block, 0, 1)
    assert b.lines.tolist() == [1, 3]
    assert [(m.line, m.reason) for m in bad] == [(2, "JSON nested too deeply")]


def test_line_splitter_caps_a_line_without_newline() -> None:
    sp = LineSplitter(max_line=100)
    blocks = [sp.feed(b"1,2,3,4\n" + b"9" * 60)]
    for _ in range(50):  # 3 KB of one line: never buffered beyond max_line + chunk
        blocks.append(sp.feed(b"9" * 60))
        assert sp.buffered <= 160
    blocks.append(sp.feed(b"9\n5,6,7,8\n"))
    blocks.append(sp.feed(b"", final=True))
    assert [b for b in blocks if b[0]] == [
        (b"1,2,3,4\n", 0, 1),
        (b"5,6,7,8\n", 3070, 3),
    ]
    ((m),) = sp.overlong
    assert (m.line, m.offset, m.reason) == (2, 8, "line longer than 100 bytes")
    assert (sp.offset, sp.line) == (3078, 4)


def test_line_splitter_overlong_unterminated_last_line() -> None:
    sp = LineSplitter(max_line=10)
    assert sp.feed(b"a" * 30, final=True) == (b"", 30, 2)
    assert [m.line for m in sp.overlong] == [1]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_coordinates_beyond_max_abs_are_malformed(fmt: str) -> None:
    rows = [(1, 0.5, 0.5, 0.5), (2, 1e300, 0.5, 0.5), (3, 0.5, -2e17, 0.5)]
    if fmt == "csv":
        block = b"".join(b"%r,%r,%r,%r\n" % r for r in rows)
    else:
        block = b"".join(
            json.dumps(dict(zip("txyz", r, strict=True))).encode() + b"\n" for r in rows
        )
    b, bad = parse_block(fmt, block, 0, 1, max_abs=1e17)
    assert b.lines.tolist() == [1]
    assert [m.line for m in bad] == [2, 3] and "overflows int64" in bad[0].reason
    b, bad = parse_block(fmt, block, 0, 1)  # no bound: every line is an event
    assert len(b) == 3 and bad == []


def test_time_windows_push_some_stops_at_the_limit() -> None:
    w = Windower(1000, seconds=1.0)
    batch = _batch(50, dt=2.0)  # every event its own slot
    out, used = w.push_some(batch, 3)
    assert len(out) == 3 and used == 3 and w.pending == 0
    out, used = w.push_some(batch.slice(used, len(batch)), None)
    assert len(out) == 46 and used == 47 and w.pending == 1


def test_read_batch_errors_name_the_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "e.txt"
    p.write_bytes(b'{"t":1,"x":1,"y":2,"z":3}\n{"t":2,"x":1,"y":2}\n')
    with pytest.raises(InputError, match=r"e\.txt:2: ") as e:
        read_batch(p)  # sniffed as JSONL from its first byte
    assert e.value.position == 2
    with pytest.raises(InputError, match="cannot read"):
        read_batch(tmp_path / "missing.csv")
    p.write_bytes(b"timestamp,x,y,z\n1,2,3,4\n")
    assert read_batch(p).tails == [b"2,3,4"]


@pytest.mark.parametrize(
    "line", [b"2," + b"x" * 200_000 + b",3,4", b'2,"1\x00",3,4'], ids=["huge", "nul"]
)
def test_csv_module_errors_are_malformed_lines(line: bytes) -> None:
    # The csv module raises for a cell over its 128 KiB field limit (and NUL on
    # older Pythons); that used to escape the parser and stop the agent.
    b, bad = parse_csv_block(b"1,2,3,4\n" + line + b"\n5,6,7,8\n", 0, 2)
    assert b.lines.tolist() == [2, 4] and [m.line for m in bad] == [3]
