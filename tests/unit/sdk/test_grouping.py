"""The SDK's per-partition batching (raw layout 2): every event in a record of its
volume's default partition, every event once and in its volume's order, seqs strictly
increasing, flushes by size and age, records within their bounds."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from streams.core.codec import default_schemas
from streams.core.events import OPS, STATUSES, IoEvent
from streams.core.partitioning import default_partition
from streams.core.raw import EVENT_WIRE_BYTES, raw_batch
from streams.sdk.grouping import Outgoing, PartitionBatcher, record_bytes_bound

T0 = 1_700_000_000 * 10**9
MS = 10**6
SCHEMAS = default_schemas()
BIG_BYTES = 1 << 30


def event(volume_id: str = "vol-1", k: int = 0, tenant_id: str = "t-1",
          host_id: str | None = "h-1", op: str = "read", status: str = "ok") -> IoEvent:
    """Event number ``k`` of a volume: k is visible in offset, bytes and times."""
    return IoEvent(volume_id, tenant_id, op, status, 512 * k, 4096 + k, T0 + 10 * k,
                   T0 + 10 * k + 5, host_id)


def decoded(out: Outgoing) -> tuple[int, list[IoEvent]]:
    """(seq, events) of a record, through the Avro encoding and core/raw.py's decoder."""
    name, record = SCHEMAS.decode(SCHEMAS.encode("IoBatch2", out.record))
    assert name == "IoBatch2"
    batch = raw_batch(name, record)
    cols = batch.columns
    events = [
        IoEvent(cols.volumes[v], cols.tenants[v], OPS[op], STATUSES[status], offset, nbytes,
                submit, complete, batch.host_id)
        for v, op, status, offset, nbytes, submit, complete in zip(
            cols.volume.tolist(), cols.op.tolist(), cols.status.tolist(),
            batch.offset.tolist(), cols.nbytes.tolist(), cols.submit_ns.tolist(),
            cols.complete_ns.tolist(), strict=True)]
    assert batch.producer_id == "p-1" and len(events) == out.events
    return batch.seq, events


def check_records(outs: list[Outgoing], added: list[IoEvent], partitions: int | None,
                  max_events: int, max_bytes: int) -> None:
    """The invariants every flush keeps (the property test's oracle)."""
    seqs, by_volume = [], defaultdict(list)
    for out in outs:
        seq, events = decoded(out)
        seqs.append(seq)
        assert 1 <= len(events) <= max_events
        volumes = {e.volume_id for e in events}
        assert out.key == events[0].volume_id.encode() or out.key.decode() in volumes
        assert out.key.decode() == out.record["volumes"][0]["volume_id"]
        if partitions is None:  # the count unknown: one volume per record, any count fits
            assert len(volumes) == 1 and out.partition is None
        else:
            key_partition = default_partition(out.key, partitions)
            assert out.partition == key_partition
            assert {default_partition(v.encode(), partitions) for v in volumes} == {
                key_partition}  # the broker puts the record where each of its volumes is
        assert len({e.host_id for e in events}) == 1
        # by volume, in the volume table's order (the worker need not sort them)
        table = {v["volume_id"]: i for i, v in enumerate(out.record["volumes"])}
        local = [table[e.volume_id] for e in events]
        assert local == sorted(local)
        for e in events:
            by_volume[e.volume_id].append(e)
        if len(events) > 1:
            assert len(SCHEMAS.encode("IoBatch2", out.record)) <= max_bytes
    assert seqs == sorted(set(seqs))  # strictly increasing in send order
    want = defaultdict(list)
    for e in added:
        want[e.volume_id].append(e)
    assert dict(by_volume) == dict(want)  # each event once, each volume in its order


def test_one_record_per_partition_holds_each_volume_of_it() -> None:
    batcher = PartitionBatcher("p-1", 10_000, 100 * MS, BIG_BYTES, partitions=4)
    added = [event(f"vol-{k % 40}", k) for k in range(1000)]
    for e in added:
        assert batcher.add_event(e) is False
    outs = batcher.take_ready(T0, everything=True)
    parts = {default_partition(f"vol-{v}".encode(), 4) for v in range(40)}
    assert sorted(o.partition for o in outs) == sorted(parts)  # one each
    check_records(outs, added, 4, 10_000, BIG_BYTES)
    assert [o.record["seq"] for o in outs] == list(range(len(outs)))
    assert batcher.buffered_events == 0 and batcher.take_ready(T0, everything=True) == []


def test_seqs_keep_growing_across_flushes() -> None:
    batcher = PartitionBatcher("p-1", 5, 100 * MS, BIG_BYTES, partitions=3)
    seqs = []
    for k in range(23):
        if batcher.add_event(event(f"vol-{k % 7}", k)):
            seqs += [o.record["seq"] for o in batcher.take_ready(T0)]
    seqs += [o.record["seq"] for o in batcher.take_ready(T0, everything=True)]
    assert seqs == list(range(len(seqs))) and len(seqs) > 5


@pytest.mark.parametrize(("max_events", "added", "full_after"), [
    (1, 2, [True, True]),  # every event fills the buffer
    (3, 3, [False, False, True]),  # full exactly at max_events
    (3, 4, [False, False, True, True]),  # still full until taken
])
def test_add_says_when_the_buffer_is_full(max_events: int, added: int,
                                          full_after: list[bool]) -> None:
    batcher = PartitionBatcher("p-1", max_events, 10**15, BIG_BYTES, partitions=2)
    assert [batcher.add_event(event(k=k)) for k in range(added)] == full_after
    outs = batcher.take_ready(T0)  # full: taken at once, however young
    assert sum(o.events for o in outs) == added and all(o.events <= max_events for o in outs)
    assert len(outs) == -(-added // max_events)  # one volume: cut into max_events pieces


def test_age_counts_from_the_take_before_the_first_event() -> None:
    """The ticker calls take_ready every quarter of max_age; an event's arrival is known
    to that precision, so it is taken as the tick before it: never sent later."""
    batcher = PartitionBatcher("p-1", 100, 100 * MS, BIG_BYTES, partitions=2)
    assert batcher.take_ready(T0) == []  # empty: a tick
    batcher.add_event(event(k=1))
    assert batcher.take_ready(T0 + 25 * MS) == []
    assert batcher.take_ready(T0 + 100 * MS - 1) == []  # 1 ns before max_age since T0
    [out] = batcher.take_ready(T0 + 100 * MS)
    assert out.events == 1
    batcher.add_event(event(k=2))  # the next batch's age counts from the last take
    assert batcher.take_ready(T0 + 199 * MS) == []
    assert len(batcher.take_ready(T0 + 200 * MS)) == 1


def test_without_the_partition_count_each_record_holds_one_volume() -> None:
    batcher = PartitionBatcher("p-1", 100, 100 * MS, BIG_BYTES)
    added = [event(f"vol-{k % 3}", k) for k in range(12)]
    for e in added:
        batcher.add_event(e)
    outs = batcher.take_ready(T0, everything=True)
    assert [o.key for o in outs] == [b"vol-0", b"vol-1", b"vol-2"]
    check_records(outs, added, None, 100, BIG_BYTES)
    batcher.partitions = 2  # learnt later: grouped from the next flush on
    for e in added:
        batcher.add_event(e)
    assert len(batcher.take_ready(T0, everything=True)) <= 2
    with pytest.raises(ValueError, match="at least one partition"):
        batcher.partitions = 0


def test_a_volume_that_changes_tenant_or_host_keeps_its_order_in_later_records() -> None:
    batcher = PartitionBatcher("p-1", 100, 100 * MS, BIG_BYTES, partitions=1)
    added = [event("vol-a", 0), event("vol-b", 1), event("vol-a", 2, tenant_id="t-2"),
             event("vol-b", 3), event("vol-a", 4, host_id="h-2"), event("vol-a", 5)]
    for e in added:
        batcher.add_event(e)
    outs = batcher.take_ready(T0, everything=True)
    check_records(outs, added, 1, 100, BIG_BYTES)
    assert len(outs) == 4  # a volume appears once per record, a record has one host


def test_hosts_of_one_partition_get_a_record_each() -> None:
    batcher = PartitionBatcher("p-1", 100, 100 * MS, BIG_BYTES, partitions=1)
    added = [event(f"vol-{k % 4}", k, host_id=f"h-{k % 2}") for k in range(20)]
    for e in added:
        batcher.add_event(e)
    outs = batcher.take_ready(T0, everything=True)
    assert len(outs) == 2
    check_records(outs, added, 1, 100, BIG_BYTES)


def test_a_record_stays_within_its_byte_bound_with_long_volume_ids() -> None:
    bound = record_bytes_bound(20_000)
    assert bound == 15_000  # three quarters: room for Kafka's framing
    batcher = PartitionBatcher("p-1", 10_000, 100 * MS, bound, partitions=1)
    added = [event(f"vol-{k % 300:03d}-" + "x" * 200, k) for k in range(3000)]
    for e in added:
        batcher.add_event(e)
    outs = batcher.take_ready(T0, everything=True)
    assert len(outs) > 1 + 3000 * EVENT_WIRE_BYTES // bound
    check_records(outs, added, 1, 10_000, bound)


def test_events_no_record_can_carry_are_rejected_with_a_reason_and_the_rest_sent() -> None:
    batcher = PartitionBatcher("p-1", 100, 100 * MS, BIG_BYTES, partitions=2)
    good = [event(f"vol-{k}", k) for k in range(4)]
    for e in good[:2]:
        batcher.add_event(e)
    batcher.add("vol-x", "t-1", "read", "ok", 1.5, 4096, T0, T0 + 1)  # type: ignore[arg-type]
    batcher.add("vol-y", "t-1", "read", "ok", 0, 1 << 63, T0, T0 + 1)
    batcher.add(7, "t-1", "read", "ok", 0, 1, T0, T0 + 1)  # type: ignore[arg-type]
    batcher.add("vol-z", "t-1", "read", "ok", 0, 1, T0, "soon")  # type: ignore[arg-type]
    for e in good[2:]:
        batcher.add_event(e)
    outs = batcher.take_ready(T0, everything=True)
    check_records(outs, good, 2, 100, BIG_BYTES)
    reasons = {r.row[0]: r.reason for r in batcher.rejected}
    assert reasons == {
        "vol-x": "offset must be an integer that fits in 64 bits (signed)",
        "vol-y": "bytes must be an integer that fits in 64 bits (signed)",
        7: "volume_id and tenant_id must be strings, host_id a string or None",
        "vol-z": "complete_ns must be an integer that fits in 64 bits (signed)",
    }


def test_the_largest_int64_values_pass_exactly() -> None:
    batcher = PartitionBatcher("p-1", 100, 100 * MS, BIG_BYTES, partitions=2)
    batcher.add("vol-1", "t-1", "write", "failed", (1 << 63) - 1, -(1 << 63), 0, 1)
    [out] = batcher.take_ready(T0, everything=True)
    [e] = decoded(out)[1]
    assert (e.offset, e.bytes, e.op, e.status) == ((1 << 63) - 1, -(1 << 63), "write", "failed")
    assert batcher.rejected == []


@pytest.mark.parametrize(("op", "status"), [("trim", "ok"), ("read", "lost")])
def test_an_unknown_op_or_status_raises_at_once(op: str, status: str) -> None:
    batcher = PartitionBatcher("p-1", 100, 100 * MS, BIG_BYTES, partitions=2)
    with pytest.raises(ValueError, match="unknown op or status"):
        batcher.add("vol-1", "t-1", op, status, 0, 1, T0, T0 + 1)
    assert batcher.buffered_events == 0
    with pytest.raises(ValueError, match="max_events must be at least 1"):
        PartitionBatcher("p-1", 0, MS, BIG_BYTES)


VOLUMES = ["vol-1", "vol-2", "vol-3", "vol-ä", "v", "volume-with-a-longer-id-0042", "x" * 9]


@st.composite
def scripts(draw: Any) -> list[tuple[str, Any]]:
    """adds (rarely another tenant or host), ticks and takes."""
    script: list[tuple[str, Any]] = []
    for n in range(draw(st.integers(0, 120))):
        kind = draw(st.sampled_from(["add"] * 6 + ["tick", "take", "flush"]))
        if kind == "add":
            script.append(("add", event(
                draw(st.sampled_from(VOLUMES)), n,
                tenant_id=draw(st.sampled_from(["t-1"] * 6 + ["t-2"])),
                host_id=draw(st.sampled_from(["h-1"] * 6 + ["h-2", None])),
                op=draw(st.sampled_from(OPS)), status=draw(st.sampled_from(STATUSES)))))
        elif kind == "tick":
            script.append(("tick", draw(st.integers(0, 60 * MS))))
        else:
            script.append((kind, None))
    return script


@hyp_settings(max_examples=300, deadline=None)
@given(scripts(), st.one_of(st.none(), st.integers(1, 12)), st.integers(1, 9),
       st.sampled_from([BIG_BYTES, 600, 1200]))
def test_every_event_lands_once_in_order_in_its_partition(
    script: list[tuple[str, Any]], partitions: int | None, max_events: int, max_bytes: int,
) -> None:
    batcher = PartitionBatcher("p-1", max_events, 100 * MS, max_bytes, partitions)
    now_ns, added, outs = T0, [], []
    for kind, arg in script:
        if kind == "tick":
            now_ns += arg
        elif kind == "add":
            full = batcher.add_event(arg)
            added.append(arg)
            assert full is (batcher.buffered_events >= max_events)
        else:
            before = batcher.buffered_events
            taken = batcher.take_ready(now_ns, everything=kind == "flush")
            assert sum(o.events for o in taken) in (0, before)  # all or nothing
            assert not (before >= max_events and not taken)  # full: taken at once
            outs += taken
    outs += batcher.take_ready(now_ns, everything=True)
    assert batcher.buffered_events == 0 and batcher.rejected == []
    check_records(outs, added, partitions, max_events, max_bytes)
