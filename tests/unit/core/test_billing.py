"""The hourly billing ledger against the brute-force per-hour oracle (SEMANTICS.md section 5).

Events of several volumes arrive in records, out of order, while the watermark
moves on; some arrive after their hour was emitted. Whatever the arrival, the
records of each (volume, hour) add up to the oracle, sequences run 0, 1, 2, ...
without gaps, record 0 comes when the watermark passed the hour, and each late
record makes exactly one adjustment holding exactly its events of that hour.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streams.core.batch import EventBatch
from streams.core.billing import BillingBook, BillingRecord
from streams.core.counters import named_counters
from streams.core.events import OP_CODE, STATUS_CODE
from streams.core.times import HOUR_NS, NS_PER_S
from streams.core.windows.book import WindowSettings
from streams.state.stages import open_partition_windows
from tests.oracles.counters import billing_oracle

T0 = 1_700_000_000 * NS_PER_S - (1_700_000_000 * NS_PER_S) % HOUR_NS
NOT_COUNTERS = ("volume_id", "tenant_id", "last_io_ns")


def _columns(volume_id: str, tenant_id: str, batch: list[dict[str, Any]]) -> EventBatch:
    return EventBatch(
        volume_id, tenant_id,
        ops=bytes(OP_CODE[e["op"]] for e in batch),
        statuses=bytes(STATUS_CODE[e["status"]] for e in batch),
        nbytes=[e["bytes"] for e in batch], submit_ns=[e["submit_ns"] for e in batch],
        complete_ns=[e["complete_ns"] for e in batch], indexes=range(len(batch)),
    )


def _oracle_counters(events: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, int]]:
    return {key: {k: v for k, v in row.items() if k not in NOT_COUNTERS}
            for key, row in billing_oracle(events).items()}


def _ledger_sums(records: list[BillingRecord]) -> dict[tuple[str, int], dict[str, int]]:
    sums: dict[tuple[str, int], dict[str, int]] = {}
    for record in records:
        row = sums.setdefault((record.volume_id, record.hour_start_ns), {})
        for name, value in named_counters(record.counters).items():
            row[name] = row.get(name, 0) + value
    return sums


event_st = st.fixed_dictionaries({
    "volume_id": st.sampled_from(["vol-a", "vol-b", "vol-c"]),
    "op": st.sampled_from(["read", "write", "flush", "discard"]),
    "status": st.sampled_from(["ok", "ok", "ok", "failed", "invalid"]),
    "bytes": st.integers(0, 1 << 20),
    "complete_ns": st.integers(T0, T0 + 4 * HOUR_NS - 1),
    "latency_ns": st.integers(0, 10 * NS_PER_S),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_st, min_size=1, max_size=120), st.randoms(use_true_random=False))
def test_ledger_adds_up_to_the_oracle_whatever_the_arrival(
    raw: list[dict[str, Any]], rnd: random.Random,
) -> None:
    events = [{**e, "tenant_id": f"tenant-{e['volume_id']}",
               "submit_ns": e["complete_ns"] - e["latency_ns"]} for e in raw]
    rnd.shuffle(events)
    book = BillingBook({})
    records: list[BillingRecord] = []
    watermark = T0 - 1
    pending = list(events)
    while pending:
        volume = pending[0]["volume_id"]  # one record: the next few events of one volume
        batch = [e for e in pending if e["volume_id"] == volume][:rnd.randint(1, 8)]
        taken = {id(e) for e in batch}
        pending = [e for e in pending if id(e) not in taken]
        # Late: an hour whose record 0 is out. (An event for an hour that already ended but
        # had no events of this volume yet starts the hour: its record 0 comes at the next
        # close, not as an adjustment.)
        closed_before = {(r.volume_id, r.hour_start_ns) for r in records if r.sequence == 0}
        adjustments = book.add_events(_columns(volume, batch[0]["tenant_id"], batch))
        late = [e for e in batch
                if (volume, e["complete_ns"] - e["complete_ns"] % HOUR_NS) in closed_before]
        late_hours = {e["complete_ns"] - e["complete_ns"] % HOUR_NS for e in late}
        # One adjustment per late hour of this record, holding exactly its events there.
        assert sorted(a.hour_start_ns for a in adjustments) == sorted(late_hours)
        for adjustment in adjustments:
            assert adjustment.sequence > 0 and adjustment.kind == "adjustment"
            mine = [e for e in late if e["complete_ns"] - adjustment.hour_start_ns < HOUR_NS
                    and e["complete_ns"] >= adjustment.hour_start_ns]
            expected = _oracle_counters(mine)[(volume, adjustment.hour_start_ns)]
            assert named_counters(adjustment.counters) == expected
        records += adjustments
        if rnd.random() < 0.4:
            watermark += rnd.randint(0, 2 * HOUR_NS)
            for record in book.close_for(watermark):
                assert record.sequence == 0 and record.kind == "hour"
                assert record.hour_start_ns + HOUR_NS <= watermark
                records.append(record)
    event(f"adjustments made: {any(r.sequence > 0 for r in records)}")
    records += book.close_for(T0 + 10 * HOUR_NS)
    assert not book.has_open_hours
    assert _ledger_sums(records) == _oracle_counters(events)
    sequences: dict[tuple[str, int], list[int]] = {}
    for record in records:
        sequences.setdefault((record.volume_id, record.hour_start_ns), []).append(record.sequence)
    assert all(sorted(s) == list(range(len(s))) for s in sequences.values())
    assert len({r.record_id for r in records}) == len(records)


def test_record_ids_are_deterministic_and_name_tenant_volume_hour_sequence() -> None:
    record = BillingRecord("tenant-1", "vol-1", T0, 2, tuple([0] * 20))
    assert record.record_id == f"tenant-1/vol-1/{T0}/2"
    body = record.to_dict()
    assert (body["record_id"], body["sequence"], body["kind"], body["hour_length_ns"]) == (
        record.record_id, 2, "adjustment", HOUR_NS)


def _event(volume: str, complete_ns: int, op: str = "read") -> dict[str, Any]:
    return {"volume_id": volume, "tenant_id": "t", "op": op, "status": "ok", "bytes": 4096,
            "submit_ns": complete_ns - 1000, "complete_ns": complete_ns}


def test_partition_windows_bills_through_the_table_and_survives_a_rebuild() -> None:
    table: dict[bytes, bytes] = {}
    windows = open_partition_windows(3, table, WindowSettings(), retention_ns=7 * 24 * HOUR_NS)
    first = [_event("vol-1", T0 + 10 * NS_PER_S), _event("vol-1", T0 + 20 * NS_PER_S, "write")]
    windows.on_events(_columns("vol-1", "t", first), wall_ns=T0)
    assert windows.needs_ticks and windows.take_billing() == []
    # The hour closes once the watermark passes its end (grace 2 s).
    after = [_event("vol-1", T0 + HOUR_NS + 3 * NS_PER_S)]
    windows.on_events(_columns("vol-1", "t", after), wall_ns=T0)
    [hour] = windows.take_billing()
    assert (hour.sequence, named_counters(hour.counters)["read_ios"],
            named_counters(hour.counters)["write_ios"]) == (0, 1, 1)
    # A worker that takes the partition over rebuilds from the table alone.
    rebuilt = open_partition_windows(3, table, WindowSettings(), retention_ns=7 * 24 * HOUR_NS)
    late = [_event("vol-1", T0 + 30 * NS_PER_S, "discard")]
    rebuilt.on_events(_columns("vol-1", "t", late), wall_ns=T0)
    [adjustment] = rebuilt.take_billing()
    assert (adjustment.sequence, named_counters(adjustment.counters)["discard_ios"]) == (1, 1)
    assert sum(named_counters(adjustment.counters).values()) == 1 + 4096 + 1000
    # Billing hours stay while an accepted event could reach them, then go.
    hour_key = rebuilt.billing.store._key(("vol-1", T0))  # type: ignore[attr-defined]
    rebuilt.on_tick(T0 + 7 * 24 * HOUR_NS)
    assert hour_key in table
    rebuilt.on_tick(T0 + 7 * 24 * HOUR_NS + 2 * HOUR_NS + 60 * NS_PER_S)
    assert hour_key not in table
