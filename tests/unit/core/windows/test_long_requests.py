"""Requests in flight for a very long time (SEMANTICS.md sections 1 and 4): any
submit_ns <= complete_ns is valid, so one event may overlap 1.7e9 one-second windows.
Their in-flight time stops at the revision horizon of the watermark the batch makes, so
a request touches at most (grace + horizon) / L + 1 windows, and a worker's memory and
work stay bounded whatever the latencies. Checked against the brute-force oracle, which
states the rule on its own (tests/oracles/windows.py ``horizon_oracle``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.codec import SchemaSet
from streams.core.events import DEFAULT_RETENTION_NS, INT64_MIN, OP_CODE, STATUS_CODE, event_error
from streams.core.raw import layout2_record, raw_batch
from streams.core.times import NS_PER_S
from streams.core.windows.acc import window_stats
from streams.core.windows.book import WindowBook, WindowSettings
from tests.oracles.windows import horizon_oracle
from tests.unit.core.windows.test_vector import columns_of, make_event

T0 = 1_700_000_000 * NS_PER_S


def _bound(window_settings: WindowSettings, window_len_ns: int) -> int:
    """The most windows one batch can touch per volume (completions included)."""
    return (window_settings.grace_ns + window_settings.horizon_ns) // window_len_ns + 2


def _published(book: WindowBook) -> dict[tuple[str, int], dict[str, Any]]:
    return {key: window_stats(key[0], entry.tenant_id, entry.acc)
            for key, entry in book.store.items()}


def _per_volume(book: WindowBook) -> dict[str, int]:
    counts: dict[str, int] = {}
    for volume_id, _ in book.store:
        counts[volume_id] = counts.get(volume_id, 0) + 1
    return counts


def _long_events(now_ns: int) -> list[dict[str, Any]]:
    """Requests in flight since the epoch, since int64's start, for the retention, for
    two hours and for just under the horizon, among short ones, in three volumes."""
    latencies = [now_ns, now_ns - INT64_MIN, DEFAULT_RETENTION_NS, 7200 * NS_PER_S,
                 3599 * NS_PER_S + 7, 1_500_000, 0]
    return [make_event(v, op, status, now_ns - k * 997_000_003 - v, latency, 4096)
            for v in range(3) for k, latency in enumerate(latencies)
            for op, status in (("read", "ok"), ("write", "failed"), ("flush", "invalid"))]


@pytest.mark.parametrize("watermark", [None, T0 - 600 * NS_PER_S, T0 + 10 * NS_PER_S])
def test_requests_in_flight_for_days_touch_a_bounded_number_of_windows(
    watermark: int | None,
) -> None:
    """On a fresh book (no watermark) and on books with one, behind or past the batch."""
    window_settings = WindowSettings()
    book = WindowBook(window_settings, {})
    events = _long_events(T0)
    book.add_columns(columns_of(events), watermark)
    assert max(_per_volume(book).values()) <= _bound(window_settings, NS_PER_S)
    expected, late = horizon_oracle([(events, watermark)], NS_PER_S,
                                    window_settings.grace_ns, window_settings.horizon_ns)
    assert _published(book) == expected
    assert book.late_beyond_horizon == late
    if watermark is None:  # the batch's own watermark: its requests reach back an hour
        first = min(start for _, start in book.store)
        assert first == T0 - window_settings.grace_ns - window_settings.horizon_ns


long_latencies = st.one_of(
    st.integers(0, 5 * NS_PER_S),
    st.integers(5 * NS_PER_S, 200 * NS_PER_S),
    st.sampled_from([DEFAULT_RETENTION_NS, T0, T0 + 300 * NS_PER_S, T0 - INT64_MIN]),
)
long_events_st = st.lists(
    st.builds(make_event, volume=st.integers(0, 3),
              op=st.sampled_from(["read", "write", "flush", "discard"]),
              status=st.sampled_from(["ok", "ok", "failed", "invalid"]),
              complete_ns=st.integers(T0, T0 + 300 * NS_PER_S), latency_ns=long_latencies,
              nbytes=st.integers(0, 1 << 20)),
    min_size=1, max_size=40,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=long_events_st, cuts=st.lists(st.integers(0, 40), max_size=4),
       watermarks=st.lists(st.one_of(st.none(), st.integers(T0 - 60 * NS_PER_S,
                                                            T0 + 320 * NS_PER_S)),
                           min_size=5, max_size=5),
       horizon_s=st.sampled_from([5, 30, 90]), window_len_ns=st.sampled_from([NS_PER_S,
                                                                              7 * NS_PER_S]))
def test_long_requests_batch_by_batch_equal_the_oracle(
    events: list[dict[str, Any]], cuts: list[int], watermarks: list[int | None],
    horizon_s: int, window_len_ns: int,
) -> None:
    """Batches seen at any watermark (unset, behind, ahead): the windows and the late count
    are the oracle's, and no batch's in-flight time touches more windows per volume than
    the bound (besides the windows its events complete in)."""
    window_settings = WindowSettings(horizon_ns=horizon_s * NS_PER_S)
    book = WindowBook(window_settings, {}, window_len_ns)
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    batches = []
    for n, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        batch = events[lo:hi]
        before = {key: entry.acc.to_list() for key, entry in book.store.items()}
        book.add_columns(columns_of(batch), watermarks[n], offset=n)
        touched: dict[str, int] = {}
        for key, entry in book.store.items():
            if before.get(key) != entry.acc.to_list():
                touched[key[0]] = touched.get(key[0], 0) + 1
        for volume_id, n_windows in touched.items():  # completions: one window per event
            n_events = sum(e["volume_id"] == volume_id for e in batch)
            assert n_windows <= _bound(window_settings, window_len_ns) + n_events
        batches.append((batch, watermarks[n]))
    expected, late = horizon_oracle(batches, window_len_ns, window_settings.grace_ns,
                                    window_settings.horizon_ns)
    assert _published(book) == expected
    assert book.late_beyond_horizon == late


def test_a_hostile_record_of_requests_in_flight_since_int64s_start_is_bounded() -> None:
    """100,000 valid events of the largest latency there is, in one layout-2 record of four
    volumes, decoded and through the 1 s windows: it completes, each volume holds
    the bounded number of windows, and the in-flight time is exactly what those windows
    hold of the requests (the rest lies before the horizon)."""
    n_events, volumes = 100_000, ("vol-0", "vol-1", "vol-2", "vol-3")
    now_ns = T0 + NS_PER_S // 3
    rng = np.random.default_rng(7)
    volume = rng.integers(0, len(volumes), n_events)
    op = rng.integers(0, 2, n_events)
    assert event_error(0, 0, 0, 512, INT64_MIN, now_ns, now_ns) is None  # valid, section 1
    record = layout2_record("hostile", 0, None, volumes, ["t"] * len(volumes), {
        "volume": volume, "op": op, "status": np.zeros(n_events), "offset": np.zeros(n_events),
        "bytes": np.full(n_events, 512), "submit_ns": np.full(n_events, INT64_MIN),
        "complete_ns": np.full(n_events, now_ns)})
    schemas = SchemaSet()
    columns = raw_batch(*schemas.decode(schemas.encode("IoBatch2", record))).columns
    window_settings = WindowSettings()
    book = WindowBook(window_settings, {})  # (the stage's table cannot encode sums past
    book.add_columns(columns, None)  # int64 yet: this record's latencies add up to 2**80)
    store = book.store
    from_ns = now_ns - window_settings.grace_ns - window_settings.horizon_ns
    from_ns -= from_ns % NS_PER_S  # the first window that ends after the horizon
    n_windows = (now_ns - from_ns + NS_PER_S - 1) // NS_PER_S
    assert n_windows <= _bound(window_settings, NS_PER_S)
    for v, volume_id in enumerate(volumes):
        mine = [entry.acc for (vol, _), entry in store.items() if vol == volume_id]
        assert sorted(acc.window_start_ns for acc in mine) == [
            from_ns + k * NS_PER_S for k in range(n_windows)]
        for o in range(2):
            n = int(np.count_nonzero((volume == v) & (op == o)))
            assert sum(acc.ops[o].inflight_ns for acc in mine) == n * (now_ns - from_ns)
            assert sum(acc.ops[o].ios for acc in mine) == n
        assert sum(acc.busy_ns for acc in mine) == now_ns - from_ns
    assert book.late_beyond_horizon == 0
    assert {OP_CODE["read"], OP_CODE["write"]} == {0, 1} and STATUS_CODE["ok"] == 0
