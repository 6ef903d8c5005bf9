"""agent.retry: the pure SPEC §7 backoff policy."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk_fast.agent.retry import (
    RetryPolicy,
    backoff,
    classify_status,
    delay_bounds,
    delays,
    jittered,
    parse_retry_after,
)
from flk_fast.errors import ConfigError


class FixedRng:
    """Returns the same value forever: 0.0 gives the lowest jitter, ~1.0 the highest."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_defaults_are_spec_7() -> None:
    p = RetryPolicy()
    assert (p.base_s, p.cap_s, p.jitter, p.max_retries) == (1.0, 60.0, 0.5, 5)


def test_nominal_backoff_doubles_and_caps() -> None:
    p = RetryPolicy()
    assert [backoff(p, a) for a in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff(p, 10_000) == 60.0  # no overflow for absurd attempts
    with pytest.raises(ValueError):
        backoff(p, -1)


def test_delays_without_jitter_are_exact() -> None:
    assert list(delays(RetryPolicy(jitter=0.0))) == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert list(delays(RetryPolicy(max_retries=0))) == []


def test_jitter_extremes() -> None:
    p = RetryPolicy()
    assert list(delays(p, FixedRng(0.0))) == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert list(delays(p, FixedRng(0.5))) == [1.0, 2.0, 4.0, 8.0, 16.0]
    hi = list(delays(p, FixedRng(1.0 - 1e-12)))
    assert hi == pytest.approx([1.5, 3.0, 6.0, 12.0, 24.0])


def test_jittered_never_exceeds_cap() -> None:
    p = RetryPolicy(max_retries=10)
    # attempt 6 has nominal 60 s: +50 % would be 90 s, the cap keeps it at 60 s.
    assert jittered(p, 6, FixedRng(0.999999)) == 60.0
    assert delay_bounds(p, 6) == (30.0, 60.0)


@settings(derandomize=True, max_examples=200)
@given(
    seed=st.integers(0, 2**32 - 1),
    base=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 120.0),
    jitter=st.floats(0.0, 1.0),
    retries=st.integers(0, 12),
)
def test_every_delay_within_bounds(
    seed: int, base: float, cap: float, jitter: float, retries: int
) -> None:
    p = RetryPolicy(base_s=base, cap_s=cap, jitter=jitter, max_retries=retries)
    got = list(delays(p, random.Random(seed)))
    assert len(got) == retries
    for attempt, d in enumerate(got):
        lo, hi = delay_bounds(p, attempt)
        # 1e-9 slack: nominal*(1±j) and nominal*factor may round differently in
        # the last ulp.
        assert lo - 1e-9 <= d <= hi + 1e-9
        assert 0.0 <= d <= cap


def test_delays_are_reproducible_with_a_seeded_rng() -> None:
    p = RetryPolicy()
    assert list(delays(p, random.Random(7))) == list(delays(p, random.Random(7)))


def test_jitter_is_spread_over_the_whole_band() -> None:
    p = RetryPolicy()
    r = random.Random(1)
    samples = [jittered(p, 0, r) for _ in range(2000)]
    assert min(samples) < 0.55 and max(samples) > 1.45
    assert 0.95 < sum(samples) / len(samples) < 1.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_s": -1.0},
        {"base_s": float("nan")},
        {"cap_s": float("inf")},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"max_retries": -1},
        {"max_rate_limited": -1},
    ],
)
def test_invalid_policy_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, "ack"),
        (202, "ack"),
        (201, "dead"),
        (204, "dead"),
        (301, "dead"),
        (400, "dead"),
        (401, "dead"),
        (404, "dead"),
        (413, "dead"),
        (415, "dead"),
        (429, "rate_limited"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
    ],
)
def test_classify_status(status: int, action: str) -> None:
    assert classify_status(status) == action


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == 10.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0.0
    # Without a clock a date cannot be turned into a wait.
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT") is None
    assert parse_retry_after("Tue, 99 Nov 2023 99:99:99 GMT", now=now) is None


@pytest.mark.parametrize(
    "value",
    [
        "\u00b2",  # str.isdigit() is True, int() raises (was: the agent died)
        "\u0661",  # an Arabic-Indic one: float() would accept it
        "9" * 5000,  # int() refuses more than 4300 digits (was: ValueError)
        "1" * 65,
        "1e999",
        "Wed, 21 Oct 99999 07:28:00 GMT",
    ],
)
def test_parse_retry_after_garbage_is_none_never_raises(value: str) -> None:
    assert parse_retry_after(value, now=0.0) is None


@given(st.text(max_size=80))
@settings(derandomize=True, max_examples=300, deadline=None)
def test_parse_retry_after_never_raises(value: str) -> None:
    got = parse_retry_after(value, now=1.7e9)
    assert got is None or got >= 0.0
