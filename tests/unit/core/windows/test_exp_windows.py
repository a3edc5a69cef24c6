"""The exponential histogram in the windows (SEMANTICS.md section 3): every published
percentile is within exphist.RELATIVE_ERROR of the exact order statistic of the raw
latencies, in 1 s windows and in their 1 m and 1 h rollups (merged integers, or rebuilt from
the published records as the rollup agents do); and records written before it still roll up."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.batch import EventBatch
from streams.core.codec import SchemaSet
from streams.core.events import OPS
from streams.core.times import NS_PER_S
from streams.core.windows.acc import (
    PERCENTILES,
    WindowAcc,
    acc_from_stats,
    percentile_ns,
    rollup,
    window_start_ns,
    window_stats,
)
from streams.core.windows.book import WindowBook, WindowSettings
from streams.core.windows.exphist import RELATIVE_ERROR, ExpHistogram
from tests.unit.core.test_codec import SCHEMA_DIR, encode_with, load_json

T0 = (472_223 * 3600 - 7 * 60) * NS_PER_S  # 7 minutes before an hour: the rollups span two
MINUTE, HOUR = 60 * NS_PER_S, 3600 * NS_PER_S

LATENCY = st.one_of(st.just(0), st.integers(1, 100), st.integers(1, 5 * 10**6),
                    st.integers(10**6, 30 * NS_PER_S), st.integers(2**40, 2**63 - 1))
EVENTS = st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0, 0, 1, 2]),
                            st.integers(0, 14 * MINUTE), LATENCY), min_size=1, max_size=150)


def second_windows(events: list[tuple[int, int, int, int]]) -> list[WindowAcc]:
    """The 1 s windows of a WindowBook (the vectorised path) of one volume."""
    store: dict[tuple[str, int], Any] = {}
    book = WindowBook(WindowSettings(), store)  # type: ignore[arg-type]
    complete = [T0 + at for _, _, at, _ in events]
    book.add_events(EventBatch(
        "vol-1", "t-1", bytes(op for op, _, _, _ in events),
        bytes(status for _, status, _, _ in events), [0] * len(events),
        [c - lat for c, (_, _, _, lat) in zip(complete, events, strict=True)], complete,
        range(len(events))), None)
    return [entry.acc for _, entry in sorted(store.items())]


def exact(latencies: list[int], num: int, den: int) -> int:
    ordered = sorted(latencies)
    return ordered[-(-len(ordered) * num // den) - 1]


def check(stats: dict[str, Any], events: list[tuple[int, int, int, int]]) -> int:
    """Each percentile of a record against its window's raw latencies; how many checked."""
    start, length = stats["window_start_ns"], stats["window_length_ns"]
    checked = 0
    for code, op in enumerate(OPS):
        latencies = [lat for o, status, at, lat in events
                     if o == code and status != 2 and start <= T0 + at < start + length]
        for name, num, den in PERCENTILES:
            got = stats[f"{name}_{op}_latency_ns"]
            if not latencies:
                assert got is None
                continue
            want = exact(latencies, num, den)
            assert abs(got - want) <= RELATIVE_ERROR * want + 0.5, (name, op, got, want)
            checked += 1
        assert sum(stats[f"{op}_latency_exp"]["counts"]) + \
            stats[f"{op}_latency_exp"]["zero"] == len(latencies)
    return checked


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_percentiles_are_within_the_stated_error_in_windows_and_rollups(
        events: list[tuple[int, int, int, int]]) -> None:
    seconds = second_windows(events)
    for length in (MINUTE, HOUR):
        by_start: dict[int, list[WindowAcc]] = {}
        for acc in seconds:
            by_start.setdefault(window_start_ns(acc.window_start_ns, length), []).append(acc)
        for parts in by_start.values():
            merged = window_stats("vol-1", "t-1", rollup(parts, length))
            # the rollup agents' way: from the published records of the windows below
            again = rollup([acc_from_stats(window_stats("vol-1", "t-1", p)) for p in parts],
                           length)
            assert window_stats("vol-1", "t-1", again) == merged
            check(merged, events)
    for acc in seconds:
        check(window_stats("vol-1", "t-1", acc), events)
    assert RELATIVE_ERROR < 0.011


def test_a_record_written_before_the_exp_histogram_rolls_up_as_before() -> None:
    """A v1 WindowStats record read with the current schema has the empty default exp: its
    ops are "not known", so a rollup over it takes its percentiles from the 20-bin histogram
    and publishes the empty exp; its windows of known parts alone are exact."""
    ms = 10**6  # three reads completing in three 1 s windows
    events = [(0, 0, 500 * ms, 3 * ms), (0, 0, 1500 * ms, 7 * ms // 10), (0, 1, 2500 * ms, ms)]
    seconds = second_windows(events)
    schemas = SchemaSet()
    v1 = load_json(SCHEMA_DIR / "history" / "window_stats.v1.avsc")
    old = []
    for acc in seconds:
        record = {**window_stats("vol-1", "t-1", acc), "revision": 0}
        for op in OPS:
            del record[f"{op}_latency_exp"]
        old.append(schemas.decode(encode_with(v1, record), expect="WindowStats")[1])
    assert old[0]["read_latency_exp"] == {"offset": 0, "counts": [], "zero": 0}
    parts = [acc_from_stats(r) for r in old]
    assert len(parts) == 3
    assert all(p.ops[0].exp is None and p.ops[1].exp == ExpHistogram() for p in parts)
    minute = window_stats("vol-1", "t-1", rollup(parts, MINUTE))
    assert minute["read_latency_exp"] == {"offset": 0, "counts": [], "zero": 0}
    assert minute["p50_read_latency_ns"] == percentile_ns(
        minute["read_latency_histogram"], 50, 100, minute["max_read_latency_ns"])
    # one known part and one old one: the sum is not known either
    mixed = rollup([seconds[0], parts[1]], MINUTE)
    assert mixed.ops[0].exp is None
    fresh = window_stats("vol-1", "t-1", rollup(seconds, MINUTE))
    assert sum(fresh["read_latency_exp"]["counts"]) == 3
    assert check(fresh, events) == 4
