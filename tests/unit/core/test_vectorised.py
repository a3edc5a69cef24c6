"""The numpy twins of the scalar rules, integer for integer: bad_event_mask against
event_error, slot_sums against add_to_slots (and the oracle), also past int64."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.batch import Columns, EventBatch
from streams.core.counters import N_SLOTS, add_to_slots, latest_complete, slot_sums
from streams.core.events import INT64_MAX, INT64_MIN, OPS, bad_event_mask, event_error
from streams.core.windows.vector import hour_partials
from tests.unit.core.ingest_records import NOW, Table, ev
from tests.unit.core.layout2_records import HOME_VOLUMES, home_placement, layout2

EDGES = st.sampled_from((INT64_MIN, INT64_MIN + 1, -1, 0, 1, 4096, NOW - 1, NOW, NOW + 1,
                         INT64_MAX - 1, INT64_MAX))
INT64 = EDGES | st.integers(INT64_MIN, INT64_MAX)


@st.composite
def raw_event(draw: st.DrawFn, now_ns: int) -> tuple[int, ...]:
    """(op, status, offset, bytes, submit_ns, complete_ns), any codes and int64 values;
    half of them completing within a day of ``now_ns`` (where the horizons let the other
    rules decide)."""
    near = st.integers(max(INT64_MIN, now_ns - 10**14), min(INT64_MAX, now_ns + 10**14))
    complete = draw(INT64 | near)
    return (draw(st.integers(0, 5) | st.integers(0, 255)), draw(st.integers(0, 4)),
            draw(INT64 | st.integers(0, 3)), draw(INT64 | st.integers(0, 3)),
            draw(INT64 | st.integers(max(INT64_MIN, complete - 10**9), complete)), complete)


@settings(max_examples=300, deadline=None)
@given(INT64, EDGES | st.integers(0, 10**15) | st.integers(0, 2**64),
       EDGES | st.integers(0, 10**15) | st.integers(0, 2**64), st.data())
def test_bad_event_mask_is_event_error(now_ns: int, retention_ns: int, future_ns: int,
                                       data: st.DataObject) -> None:
    events = data.draw(st.lists(raw_event(now_ns), min_size=1, max_size=40))
    cols = [np.array(c, dtype=np.uint8 if j < 2 else np.int64)
            for j, c in enumerate(zip(*events, strict=True))]
    mask = bad_event_mask(*cols, now_ns, retention_ns, future_ns).tolist()
    assert mask == [event_error(*e, now_ns, retention_ns, future_ns) is not None
                    for e in events]


@st.composite
def valid_columns(draw: st.DrawFn, huge: bool) -> list[tuple[int, ...]]:
    """(volume, op, status, bytes, submit_ns, complete_ns) of valid events of 3 volumes;
    ``huge``: bytes and latencies near 2**63, sums far past int64."""
    amounts = st.sampled_from((INT64_MAX, INT64_MAX - 1, 2**62)) if huge \
        else st.integers(0, 2**40)
    events = []
    for _ in range(draw(st.integers(0, 60))):
        op, status = draw(st.integers(0, len(OPS) - 1)), draw(st.integers(0, 2))
        nbytes = 0 if OPS[op] == "flush" else draw(amounts)
        complete = draw(st.integers(0, INT64_MAX) if huge else st.integers(NOW - 10**12, NOW))
        submit = draw(st.sampled_from((INT64_MIN, -1, complete)) if huge
                      else st.integers(complete - 10**9, complete))
        events.append((draw(st.integers(0, 2)), op, status, nbytes, submit, complete))
    return events


def _columns(events: list[tuple[int, ...]]) -> Columns:
    c = list(zip(*events, strict=True)) or [()] * 6
    return Columns(("a", "b", "c"), ("t", "t", "t"), np.array(c[0], dtype=np.intp),
                   np.array(c[1], dtype=np.uint8), np.array(c[2], dtype=np.uint8),
                   *(np.array(c[k], dtype=np.int64) for k in (3, 4, 5)))


def _scalar(events: list[tuple[int, ...]], volume: int) -> tuple[list[int], int | None]:
    mine = [e for e in events if e[0] == volume]
    counters = [0] * N_SLOTS
    latest = add_to_slots(counters, EventBatch(
        "v", "t", bytes(e[1] for e in mine), bytes(e[2] for e in mine),
        [e[3] for e in mine], [e[4] for e in mine], [e[5] for e in mine], range(len(mine))))
    return counters, latest


@settings(max_examples=150, deadline=None)
@given(st.booleans().flatmap(valid_columns))
def test_slot_sums_are_add_to_slots_per_volume_even_past_int64(
    events: list[tuple[int, ...]],
) -> None:
    """Huge values take the exact Python-int path: sums past 2**63 stay exact."""
    sums, latest = slot_sums(_columns(events)), latest_complete(_columns(events))
    for v in range(3):
        counters, last = _scalar(events, v)
        assert sums[v] == counters and latest[v] == last
        assert all(type(x) is int for x in sums[v])


def test_the_overflow_path_is_taken_and_exact() -> None:
    """Three reads of 2**63-1 bytes and latency: every int64 sum would wrap."""
    events = [(0, 0, 0, INT64_MAX, INT64_MIN, -1)] * 3
    [a, _, _] = slot_sums(_columns(events))
    assert a[0] == 3 and a[1] == 3 * INT64_MAX and a[4] == 3 * (2**63 - 1)
    assert a[1] > INT64_MAX  # past int64: would have wrapped


def test_events_that_would_take_a_counter_past_int64_are_rejected_and_change_nothing() -> None:
    """2**63-1 bytes and latencies near 2**64 are valid events, but no output can carry a
    counter past int64 (Avro long, the table's encoding): the volume's events that would
    take one there are dead-lettered with the reason, the rest of the record counted."""
    a, b = HOME_VOLUMES[0], HOME_VOLUMES[1]
    table = Table()
    first = [{**ev(nbytes=INT64_MAX - 10, submit_ns=NOW - 5, complete_ns=NOW), "volume_id": a}]
    outcome = table.apply(layout2([(a, "t-1", first)]), placement=home_placement(a))
    assert outcome.counted == 1 and table.counters()[a]["read_bytes"] == INT64_MAX - 10
    before = table.snapshots[a]
    # 10 more bytes is exactly int64's largest value: counted; 11 would be past it.
    at_max = [{**ev(nbytes=10), "volume_id": a}]
    past = [{**ev(nbytes=1), "volume_id": a}]
    slow = [{**ev(submit_ns=INT64_MIN, complete_ns=NOW), "volume_id": b}] * 2  # 2 x ~2**63
    ok_b = [{**ev("write", nbytes=7), "volume_id": b}]
    outcome = table.apply(layout2([(a, "t-1", at_max), (b, "t-1", ok_b)], seq=2),
                          placement=home_placement(a))
    assert outcome.counted == 2 and table.counters()[a]["read_bytes"] == INT64_MAX
    before = table.snapshots[a]
    before_b = table.snapshots[b]
    c = HOME_VOLUMES[2]
    ok_c = [{**ev("write", nbytes=5), "volume_id": c}]
    outcome = table.apply(layout2([(a, "t-1", past), (b, "t-1", slow), (c, "t-1", ok_c)],
                                  seq=3), placement=home_placement(a))
    [rejection] = outcome.rejections
    assert outcome.counted == 1 and rejection.events == 3 and not rejection.whole
    assert "read_bytes past 9223372036854775807" in rejection.event_reasons[0]
    assert all("total_read_time_ns past" in r for r in rejection.event_reasons[1:])
    assert table.snapshots[a] == before and table.snapshots[b] == before_b
    assert table.counters()[b]["write_bytes"] == 7 and table.counters()[c]["write_bytes"] == 5
    # a record whose every volume would overflow is rejected whole
    outcome = table.apply(layout2([(a, "t-1", past)], seq=4), placement=home_placement(a))
    [rejection] = outcome.rejections
    assert rejection.whole and "read_bytes past" in rejection.reason and not outcome.volumes




@settings(max_examples=150, deadline=None)
@given(st.booleans().flatmap(valid_columns))
def test_hour_partials_are_add_to_slots_per_volume_and_hour_even_past_int64(
    events: list[tuple[int, ...]],
) -> None:
    """Billing's counters per (volume, hour of complete_ns), laid out at once, against the
    scalar rule over each (volume, hour)'s events; sums past 2**63 stay exact."""
    hour_ns = 3600 * 10**9
    expected = [(v, h * hour_ns, _scalar([e for e in events if e[5] // hour_ns == h], v)[0])
                for v, h in sorted({(e[0], e[5] // hour_ns) for e in events})]
    got = [(p.volume, p.hour_start_ns, p.counters) for p in hour_partials(_columns(events))]
    assert got == expected
    assert all(type(x) is int for _, _, counters in got for x in counters)
