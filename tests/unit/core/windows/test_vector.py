"""The vectorised windows and billing hours (core/windows/vector.py) against the scalar twin
they replaced and the brute-force oracles, integer for integer.

Batches mix volumes, requests spanning hundreds of windows, zero latencies, invalid events,
events the caller's validation dropped, late events, events past the revision horizon,
replayed records and latencies past int64 (the halves path of the sums).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.batch import Columns, EventBatch
from streams.core.billing import BillingBook, BillingRecord
from streams.core.counters import named_counters
from streams.core.events import INT64_MAX, INT64_MIN, OP_CODE, STATUS_CODE, event_error
from streams.core.times import HOUR_NS, NS_PER_S
from streams.core.windows.acc import window_stats
from streams.core.windows.book import Emission, WindowBook, WindowSettings
from streams.core.windows.columns import running_max_by_run
from streams.core.windows.vector import exact_sums
from streams.state.stages import open_partition_windows
from tests.oracles.counters import billing_oracle
from tests.oracles.windows import windows_oracle
from tests.unit.core.windows import scalar_twin

T0 = 1_700_000_000 * NS_PER_S
MINUTE = 60 * NS_PER_S


def make_event(volume: int, op: str, status: str, complete_ns: int, latency_ns: int,
               nbytes: int) -> dict[str, Any]:
    return {"volume_id": f"vol-{volume}", "tenant_id": f"tenant-{volume % 2}", "op": op,
            "status": status, "offset": 0, "bytes": 0 if op == "flush" else nbytes,
            "submit_ns": max(INT64_MIN, complete_ns - latency_ns), "complete_ns": complete_ns}


def columns_of(events: list[dict[str, Any]]) -> Columns:
    """The events as the columns of one record of several volumes."""
    index: dict[str, int] = {}
    tenants: list[str] = []
    for e in events:
        if e["volume_id"] not in index:
            index[e["volume_id"]] = len(tenants)
            tenants.append(e["tenant_id"])
    def col(name: str) -> np.ndarray:
        return np.array([e[name] for e in events], dtype=np.int64)
    return Columns(tuple(index), tuple(tenants),
                   np.array([index[e["volume_id"]] for e in events], dtype=np.intp),
                   np.array([OP_CODE[e["op"]] for e in events], dtype=np.uint8),
                   np.array([STATUS_CODE[e["status"]] for e in events], dtype=np.uint8),
                   col("bytes"), col("submit_ns"), col("complete_ns"))


def batches_of(events: list[dict[str, Any]]) -> list[EventBatch]:
    """The same events as one EventBatch per volume (what the scalar path takes)."""
    by_volume: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_volume.setdefault(e["volume_id"], []).append(e)
    return [EventBatch(vol, evs[0]["tenant_id"], bytes(OP_CODE[e["op"]] for e in evs),
                       bytes(STATUS_CODE[e["status"]] for e in evs),
                       [e["bytes"] for e in evs], [e["submit_ns"] for e in evs],
                       [e["complete_ns"] for e in evs], range(len(evs)))
            for vol, evs in by_volume.items()]


HUGE = [2**62, 2**63 - 1, 2**63 + 5 * 10**17, 2**64 - 1]  # clipped to submit >= INT64_MIN
latencies = st.one_of(
    st.integers(0, 50_000),
    st.integers(50_000, 50_000_000),
    st.integers(NS_PER_S, 400 * NS_PER_S),  # hundreds of 1 s windows
    st.sampled_from([0, 9_999, 10_000, NS_PER_S, 10 * NS_PER_S, 10 * NS_PER_S + 1]),
    st.sampled_from(HUGE),
)
events_st = st.lists(
    st.builds(make_event, volume=st.integers(0, 4),
              op=st.sampled_from(["read", "write", "flush", "discard"]),
              status=st.sampled_from(["ok", "ok", "ok", "failed", "invalid"]),
              complete_ns=st.integers(T0, T0 + 120 * NS_PER_S), latency_ns=latencies,
              nbytes=st.one_of(st.integers(0, 1 << 20), st.just(INT64_MAX))),
    min_size=1, max_size=80,
)


def _emitted(emissions: list[Emission]) -> list[tuple[Any, ...]]:
    return sorted((e.volume_id, e.tenant_id, e.acc.window_start_ns, e.revision, e.offset,
                   e.acc.to_list()) for e in emissions)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_st, cuts=st.lists(st.integers(0, 80), max_size=5),
       watermarks=st.lists(st.one_of(st.none(), st.integers(T0 - 60 * NS_PER_S,
                                                            T0 + 130 * NS_PER_S)),
                           min_size=6, max_size=6),
       horizon_s=st.sampled_from([10, 45, 3600]))
def test_the_vectorised_book_equals_the_scalar_twin(
    events: list[dict[str, Any]], cuts: list[int], watermarks: list[int | None],
    horizon_s: int,
) -> None:
    """Records of several volumes, each seen at a watermark (late events, revisions, the
    horizon): the same store, the same revisions, the same late count."""
    window_settings = WindowSettings(horizon_ns=horizon_s * NS_PER_S)
    vector, scalar = WindowBook(window_settings, {}), WindowBook(window_settings, {})
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    for n, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        record = events[lo:hi]
        watermark = watermarks[n]  # None too: the record's own events bound its requests
        revised = vector.add_columns(columns_of(record), watermark, offset=n)
        twin: list[Emission] = []
        max_complete_ns = max(e["complete_ns"] for e in record)
        for batch in batches_of(record):
            twin += scalar_twin.add_events(scalar, batch, watermark, n, max_complete_ns)
        assert _emitted(revised) == _emitted(twin)
        if watermark is not None:
            assert _emitted(vector.close_for(watermark, n)) == _emitted(scalar.close_for(
                watermark, n))
    assert vector.store == scalar.store
    assert vector.late_beyond_horizon == scalar.late_beyond_horizon
    assert vector._closing.entries() == scalar._closing.entries()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_st, rnd=st.randoms(use_true_random=False))
def test_the_vectorised_billing_equals_the_scalar_twin(
    events: list[dict[str, Any]], rnd: random.Random,
) -> None:
    vector, scalar = BillingBook({}), BillingBook({})
    for n in range(3):
        record = [e for e in events if rnd.random() < 0.5]
        adjustments = vector.add_columns(columns_of(record), offset=n)
        twin: list[BillingRecord] = []
        for batch in batches_of(record):
            twin += scalar_twin.add_billing(scalar, batch, offset=n)
        assert sorted(adjustments, key=repr) == sorted(twin, key=repr)
        watermark = T0 + rnd.randint(-HOUR_NS, 3 * HOUR_NS)
        assert vector.close_for(watermark, n) == scalar.close_for(watermark, n)
    assert vector.store == scalar.store


def _dropped_by_validation(event: dict[str, Any]) -> bool:
    """The caller's validation (core.events.event_error): what reaches the windows."""
    return event_error(OP_CODE[event["op"]], STATUS_CODE[event["status"]], event["offset"],
                       event["bytes"], event["submit_ns"], event["complete_ns"],
                       T0 + 200 * NS_PER_S) is not None


def _bad(event: dict[str, Any], kind: int) -> dict[str, Any]:
    if kind == 0:  # completes before it was submitted
        return {**event, "submit_ns": event["complete_ns"] + 1}
    if kind == 1:
        return {**event, "bytes": -1}
    return {**event, "complete_ns": T0 + 3600 * NS_PER_S}  # an hour in the future


oracle_events_st = st.lists(
    st.builds(make_event, volume=st.integers(0, 6),
              op=st.sampled_from(["read", "write", "flush", "discard"]),
              status=st.sampled_from(["ok", "ok", "ok", "failed", "invalid"]),
              complete_ns=st.integers(T0, T0 + 150 * NS_PER_S),
              latency_ns=st.one_of(st.integers(0, 50_000_000), st.sampled_from([0, 10_000]),
                                   st.integers(NS_PER_S, 300 * NS_PER_S)),
              nbytes=st.integers(0, 1 << 20)),
    min_size=1, max_size=120,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=oracle_events_st, bad=st.lists(st.tuples(st.integers(0, 119), st.integers(0, 2)),
                                             max_size=6),
       seed=st.integers(0, 1000), batch_records=st.sampled_from([1, 4, 20]),
       recover=st.booleans())
def test_batches_of_records_equal_the_oracles(
    events: list[dict[str, Any]], bad: list[tuple[int, int]], seed: int, batch_records: int,
    recover: bool,
) -> None:
    """Records of several volumes arrive out of order, some twice (replays: counted once),
    in batches of ``batch_records`` through on_records; the latest revision of every
    window at 1 s, 1 m and 1 h equals the oracle, and the billing ledger adds up to it."""
    rng = random.Random(seed)
    order = sorted(events, key=lambda e: e["complete_ns"] + rng.randrange(30 * NS_PER_S))
    sent = order + [_bad(order[i % len(order)], kind) for i, kind in bad]
    rng.shuffle(sent) if rng.random() < 0.2 else None
    records: list[list[dict[str, Any]]] = []
    while len(sent) > sum(map(len, records)):
        done = sum(map(len, records))
        records.append(sent[done:done + rng.randint(1, 10)])
    parts = []
    for seq, record in enumerate(records):
        valid = [e for e in record if not _dropped_by_validation(e)]
        parts.append((columns_of(valid), ("p-1", seq)))
        if rng.random() < 0.3:
            parts.append((columns_of(valid), ("p-1", seq)))  # sent again
    table: dict[bytes, bytes] = {}
    chain = open_partition_windows(0, table, WindowSettings())
    latest: dict[tuple[int, str, int], Emission] = {}
    billing: list[BillingRecord] = []
    for n in range(0, len(parts), batch_records):
        batch = parts[n:n + batch_records]
        wall_ns = max([T0] + [int(c.complete_ns.max()) for c, _ in batch if len(c)])
        for e in chain.on_records(batch, wall_ns, offset=n):
            latest[(e.acc.window_len_ns, e.volume_id, e.acc.window_start_ns)] = e
        billing += chain.take_billing()
        if recover:
            chain = open_partition_windows(0, table, WindowSettings())
            chain.on_records(parts[:n + batch_records], wall_ns, offset=n)  # replays: no change
    for e in chain.on_tick(10**19):
        latest[(e.acc.window_len_ns, e.volume_id, e.acc.window_start_ns)] = e
    billing += chain.take_billing()
    valid = [e for e in sent if not _dropped_by_validation(e)]
    for length in (NS_PER_S, MINUTE, HOUR_NS):
        published = {(v, s): window_stats(e.volume_id, e.tenant_id, e.acc)
                     for (n, v, s), e in latest.items() if n == length}
        assert published == windows_oracle(valid, length), length
    sums: dict[tuple[str, int], dict[str, int]] = {}
    for record in billing:
        row = sums.setdefault((record.volume_id, record.hour_start_ns), {})
        for name, value in named_counters(record.counters).items():
            row[name] = row.get(name, 0) + value
    expected = {key: {k: v for k, v in row.items()
                      if k not in ("volume_id", "tenant_id", "last_io_ns")}
                for key, row in billing_oracle(valid).items()}
    assert sums == expected


def test_a_replayed_volume_contributes_nothing_and_the_others_count() -> None:
    """One record of two volumes, the first of which the windows already hold from this
    producer: only the second volume's events land, and both are marked."""
    chain = open_partition_windows(0, {}, WindowSettings())
    first = [make_event(0, "read", "ok", T0 + NS_PER_S // 2, 1_000, 4096)]
    chain.on_columns(columns_of(first), T0, ("p", 7))
    both = first + [make_event(1, "write", "ok", T0 + NS_PER_S // 2, 2_000, 512)]
    chain.on_columns(columns_of(both), T0, ("p", 7))
    chain.on_columns(columns_of(both), T0, ("p", 7))  # all replayed now
    windows = {(v, s): e.acc for (v, s), e in chain.books[0].store.items()}
    assert windows[("vol-0", T0)].ops[0].ios == 1
    assert windows[("vol-1", T0)].ops[1].ios == 1
    assert chain.applied[("vol-1", 0)] == {"p": 7}


def test_exact_sums_by_halves_past_two_to_the_64() -> None:
    values = np.array([2**64 - 1, 2**64 - 1, 3, 2**63, 2**63], dtype=np.uint64)
    starts = np.array([0, 3], dtype=np.intp)
    assert exact_sums(values, starts) == [2 * (2**64 - 1) + 3, 2**64]
    small = np.array([5, 7, 11], dtype=np.uint64)
    assert exact_sums(small, np.array([0, 1], dtype=np.intp)) == [5, 18]


def test_the_running_max_restarts_per_run_on_either_path() -> None:
    """Small spreads lift the runs apart in int64; a spread too wide for that takes the
    run-by-run path. Both are the naive running maximum per run."""
    for spread in (10, 2**61):
        rng = random.Random(spread)
        floor = np.array(sorted(rng.randrange(spread) for _ in range(30)), dtype=np.int64)
        values = floor + np.array([rng.randrange(1, spread) for _ in range(30)], dtype=np.int64)
        starts = np.zeros(30, dtype=bool)
        starts[[0, 7, 8, 20]] = True
        expected, reach = [], 0
        for i in range(30):
            reach = int(values[i]) if starts[i] else max(reach, int(values[i]))
            expected.append(reach)
        assert running_max_by_run(values, floor, starts).tolist() == expected


def test_latencies_past_int64_are_exact_against_the_twin() -> None:
    """Requests submitted at the start of int64 time: latencies up to 2**64 - 1, their sums
    past 2**64 (the halves path); the horizon keeps their in-flight pieces few."""
    events = [make_event(v, "write", status, T0 + k * NS_PER_S + v, 2**64 - 1 - k, 7)
              for k in range(3) for v in range(2) for status in ("ok", "failed", "invalid")]
    window_settings = WindowSettings(horizon_ns=5 * NS_PER_S)
    vector, scalar = WindowBook(window_settings, {}), WindowBook(window_settings, {})
    vector.add_columns(columns_of(events), T0)
    for batch in batches_of(events):
        scalar_twin.add_events(scalar, batch, T0, -1, max(e["complete_ns"] for e in events))
    assert vector.store == scalar.store
    window = vector.store[("vol-0", T0)].acc.ops[OP_CODE["write"]]
    assert window.time_ns == 2 * (events[0]["complete_ns"] - events[0]["submit_ns"]) > 2**64


def test_a_batch_of_records_that_fails_half_way_writes_nothing() -> None:
    """on_records is one unit: a failure after the windows and billing hours changed (and
    before the replay marks are written) leaves the table as it was; the retry then
    equals a fresh owner's run."""
    table: dict[bytes, bytes] = {}
    stage = open_partition_windows(0, table, WindowSettings())

    def records(at_ns: int) -> list[tuple[Columns, tuple[str, int]]]:
        return [(columns_of([make_event(v, "read", "ok", at_ns + k * NS_PER_S, 5_000_000, 512)
                             for v in range(3)]), ("p", at_ns + k)) for k in range(4)]

    stage.on_records(records(T0), T0)
    before = dict(table)
    close = stage._close

    def broken(offset: int) -> list[Emission]:
        close(offset)
        raise RuntimeError("half-way")

    stage._close = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        stage.on_records(records(T0 + 10 * NS_PER_S), T0, offset=9)
    assert table == before and stage.take_billing() == []
    stage._close = close  # type: ignore[method-assign]
    again = stage.on_records(records(T0 + 10 * NS_PER_S), T0, offset=9)
    fresh_table = dict(before)
    fresh = open_partition_windows(0, fresh_table, WindowSettings())
    assert _emitted(again) == _emitted(fresh.on_records(records(T0 + 10 * NS_PER_S), T0, 9))
    assert table == fresh_table and again


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-2**40, 2**40) | st.integers(-3, 3), max_size=40),
       st.integers(-2**62, 2**62))
def test_ranked_is_np_unique_whatever_the_range(values: list[int], shift: int) -> None:
    """_ranked counts where the range is short and sorts where it is not: either way
    what np.unique(return_inverse=True) says, dtypes included."""
    from streams.core.windows.vector import _ranked

    array = np.array([v + shift for v in values], dtype=np.int64)
    numbers, rank = _ranked(array)
    want_numbers, want_rank = np.unique(array, return_inverse=True)
    assert numbers.dtype == want_numbers.dtype and rank.dtype == want_rank.dtype
    assert numbers.tolist() == want_numbers.tolist()
    assert rank.tolist() == want_rank.reshape(-1).tolist()
