"""Per-token buckets (streams/api/ratelimit.py) on a fake clock: burst, refill, independence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.api.ratelimit import Limit, RateLimiter, retry_after_s

LIMIT = Limit(rate_per_s=2.0, burst=5)


def test_a_full_bucket_lets_a_burst_through_then_refuses() -> None:
    limiter = RateLimiter()
    assert [limiter.take("a", LIMIT, 100.0) for _ in range(5)] == [0.0] * 5
    wait_s = limiter.take("a", LIMIT, 100.0)
    assert wait_s == pytest.approx(0.5)  # one request refills in 1 / rate
    assert (limiter.allowed, limiter.refused) == (5, 1)


def test_the_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.take("a", LIMIT, 0.0)
    assert limiter.take("a", LIMIT, 0.25) == pytest.approx(0.25)  # half a request refilled
    assert limiter.take("a", LIMIT, 0.5) == 0.0  # the whole one
    assert limiter.take("a", LIMIT, 0.5) > 0
    # An hour idle refills the burst, never more.
    assert [limiter.take("a", LIMIT, 3600.0) for _ in range(6)].count(0.0) == 5


def test_tokens_are_independent() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.take("flood", LIMIT, 0.0)
    assert limiter.take("flood", LIMIT, 0.0) > 0
    assert limiter.take("quiet", LIMIT, 0.0) == 0.0
    operator = Limit(rate_per_s=100.0, burst=50)
    assert [limiter.take("op", operator, 0.0) for _ in range(50)] == [0.0] * 50


def test_a_clock_going_back_refills_nothing() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.take("a", LIMIT, 10.0)
    assert limiter.take("a", LIMIT, 5.0) > 0
    assert limiter.take("a", LIMIT, 10.0) > 0  # the time it went back is not a refill


def test_the_table_of_buckets_is_bounded() -> None:
    limiter = RateLimiter(max_keys=3)
    for key in "abcdefg":
        limiter.take(key, LIMIT, 0.0)
        assert len(limiter) <= 3


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=200),
       st.floats(min_value=0.1, max_value=50), st.integers(min_value=1, max_value=20))
def test_never_more_than_burst_plus_rate_times_elapsed(
        gaps_s: list[float], rate_per_s: float, burst: int) -> None:
    """The bucket's promise, against its definition: over any run of requests, the number
    allowed is at most burst + rate * elapsed, and a refused request was told a wait > 0."""
    limit = Limit(rate_per_s, burst)
    limiter = RateLimiter()
    now_s = 0.0
    for gap_s in gaps_s:
        now_s += gap_s
        limiter.take("k", limit, now_s)
        assert limiter.allowed <= burst + rate_per_s * (now_s - gaps_s[0]) + 1e-9


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_s(w) for w in (0.001, 0.5, 1.0, 1.2, 7.9)] == ["1", "1", "1", "2", "8"]


def test_a_limit_must_allow_something() -> None:
    for rate, burst in ((0, 1), (-1, 5), (1, 0)):
        with pytest.raises(ValueError):
            Limit(rate, burst)
