"""The producer-side Batcher: full and aged batches, seq order, nothing lost or duplicated."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.codec import SchemaSet
from streams.core.events import OP_CODE, OPS, STATUS_CODE, STATUSES, IoEvent
from streams.sdk.batching import Batcher

T0 = 1_700_000_000 * 10**9
MS = 10**6


def event(volume_id: str = "vol-1", k: int = 0, op: str = "read", status: str = "ok",
          tenant_id: str = "t-1", host_id: str | None = "h-1") -> IoEvent:
    """Event number ``k`` of a volume: k is visible in offset, bytes and times."""
    return IoEvent(volume_id, tenant_id, op, status, 512 * k, 4096 + k, T0 + 10 * k,
                   T0 + 10 * k + 5, host_id)


def events_of(record: dict[str, Any]) -> list[IoEvent]:
    """The events a taken IoBatch record carries, back as IoEvents."""
    return [
        IoEvent(record["volume_id"], record["tenant_id"], OPS[op], STATUSES[status], offset,
                nbytes, submit_ns, complete_ns, record["host_id"])
        for op, status, offset, nbytes, submit_ns, complete_ns in zip(
            record["op"], record["status"], record["offset"], record["bytes"],
            record["submit_ns"], record["complete_ns"], strict=True)
    ]


def test_max_events_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_events must be at least 1"):
        Batcher("p-1", 0, MS)


@pytest.mark.parametrize(("max_events", "added", "full_after"), [
    (1, 1, [True]),  # every event is a full batch
    (3, 3, [False, False, True]),  # full exactly at max_events
    (3, 5, [False, False, True, False, False]),  # a new batch opens after a full one
    (2, 6, [False, True] * 3),  # three full batches in a row
])
def test_add_says_when_a_batch_is_full(max_events: int, added: int,
                                       full_after: list[bool]) -> None:
    batcher = Batcher("p-1", max_events, 10**12)
    assert [batcher.add_event(event(k=k), T0) for k in range(added)] == full_after
    full = [r for r in batcher.take_ready(T0) if len(r["op"]) == max_events]
    assert len(full) == added // max_events  # full batches go out without waiting for age
    assert batcher.buffered_events == added % max_events


@pytest.mark.parametrize(("max_age_ns", "opened_ns", "now_ns", "ready"), [
    (100 * MS, T0, T0 + 100 * MS - 1, False),  # 1 ns younger than max_age
    (100 * MS, T0, T0 + 100 * MS, True),  # exactly max_age old: ready (inclusive)
    (100 * MS, T0, T0 + 10**9, True),  # long overdue
    (0, T0, T0, True),  # max_age 0: every take ships everything
    (100 * MS, T0, T0 - 5, False),  # the clock went backwards: not ready
])
def test_take_ready_by_age(max_age_ns: int, opened_ns: int, now_ns: int, ready: bool) -> None:
    batcher = Batcher("p-1", 100, max_age_ns)
    batcher.add_event(event(), opened_ns)
    assert len(batcher.take_ready(now_ns)) == int(ready)
    assert batcher.buffered_events == int(not ready)


def test_age_counts_from_the_first_event_of_a_batch() -> None:
    batcher = Batcher("p-1", 100, 100 * MS)
    batcher.add_event(event(k=0), T0)
    batcher.add_event(event(k=1), T0 + 90 * MS)  # joins the open batch: does not reset its age
    assert not batcher.take_ready(T0 + 99 * MS)
    [record] = batcher.take_ready(T0 + 100 * MS)
    assert events_of(record) == [event(k=0), event(k=1)]


def test_everything_flushes_all_buffers() -> None:
    batcher = Batcher("p-1", 3, 10**12)
    for k in range(4):
        batcher.add_event(event("vol-1", k), T0)  # one full batch and one event open
    batcher.add_event(event("vol-2"), T0)
    batcher.add_event(event("vol-3", host_id=None), T0)
    records = batcher.take_ready(T0, everything=True)
    assert [(r["volume_id"], len(r["op"])) for r in records] == [
        ("vol-1", 3), ("vol-1", 1), ("vol-2", 1), ("vol-3", 1)]
    assert batcher.buffered_events == 0
    assert batcher.take_ready(T0 + 10**13, everything=True) == []


def test_seq_grows_in_take_order_across_calls() -> None:
    batcher = Batcher("p-7", 2, 50 * MS)
    seqs = []
    for k in range(10):
        batcher.add_event(event(f"vol-{k % 3}", k), T0 + k * 20 * MS)
        seqs += [r["seq"] for r in batcher.take_ready(T0 + k * 20 * MS)]
    seqs += [r["seq"] for r in batcher.take_ready(T0, everything=True)]
    assert seqs == list(range(len(seqs))) and batcher.next_seq == len(seqs)


@pytest.mark.parametrize(("op", "status"), [
    ("trim", "ok"),  # unknown op
    ("READ", "ok"),  # enums are lowercase
    ("read", "error"),  # unknown status
    ("read", ""),  # empty status
])
def test_unknown_op_or_status_raises_and_buffers_nothing(op: str, status: str) -> None:
    batcher = Batcher("p-1", 1, 0)
    with pytest.raises(ValueError, match="unknown op or status"):
        batcher.add("vol-1", "t-1", op, status, 0, 0, T0, T0, None, T0)
    assert batcher.buffered_events == 0
    assert batcher.take_ready(T0, everything=True) == []
    assert batcher.next_seq == 0


def test_a_record_has_the_io_batch_shape_and_encodes() -> None:
    batcher = Batcher("p-1", 10, 0)
    events = [event(k=k, op=op, status=status) for k, (op, status) in enumerate(
        [("read", "ok"), ("write", "failed"), ("flush", "invalid"), ("discard", "ok")])]
    events[2] = IoEvent("vol-1", "t-1", "flush", "invalid", 0, 0, T0, T0 + 1, "h-1")
    for e in events:
        batcher.add_event(e, T0)
    [record] = batcher.take_ready(T0)
    assert record["producer_id"] == "p-1" and record["seq"] == 0
    assert record["op"] == bytes(OP_CODE[e.op] for e in events)
    assert record["status"] == bytes(STATUS_CODE[e.status] for e in events)
    schemas = SchemaSet()
    assert schemas.decode(schemas.encode("IoBatch", record)) == ("IoBatch", record)
    assert events_of(record) == events


# --- nothing lost, nothing duplicated ---------------------------------------------------------

KEYS = [("vol-1", "t-1", "h-1"), ("vol-2", "t-1", "h-1"), ("vol-3", "t-2", None),
        ("vol-1", "t-1", "h-2")]  # vol-1 moved host: a buffer of its own


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """A script of adds (event of one of KEYS) and takes, with a clock that moves forward."""
    script: list[tuple[str, Any]] = []
    for n in range(draw(st.integers(0, 80))):
        if draw(st.sampled_from((False,) * 4 + (True,))):
            script.append(("take", draw(st.booleans())))
        volume_id, tenant_id, host_id = draw(st.sampled_from(KEYS))
        op = draw(st.sampled_from(OPS))
        script.append(("add", IoEvent(volume_id, tenant_id, op, draw(st.sampled_from(STATUSES)),
                                      0 if op == "flush" else n, n, T0 + n, T0 + n + 1, host_id)))
        script.append(("tick", draw(st.integers(0, 30 * MS))))
    return script


def key_of(record: dict[str, Any]) -> tuple[str, str, str | None]:
    return record["volume_id"], record["tenant_id"], record["host_id"]


@given(steps(), st.integers(1, 8), st.integers(0, 100 * MS))
def test_every_event_is_taken_exactly_once_in_order(
    script: list[tuple[str, Any]], max_events: int, max_age_ns: int,
) -> None:
    batcher = Batcher("p-1", max_events, max_age_ns)
    now_ns, added, records, taken_events = T0, [], [], 0
    # a model of the buffers: one open per volume (volume -> key, opened_ns, events), and
    # those ready to send (key, events): full, or closed by an event of the same volume
    # with another tenant or host (a record has one of each)
    model: dict[str, tuple[tuple[str, str, str | None], int, int]] = {}
    full: list[tuple[tuple[str, str, str | None], int]] = []
    for kind, arg in script:
        if kind == "tick":
            now_ns += arg
        elif kind == "add":
            key = (arg.volume_id, arg.tenant_id, arg.host_id)
            ready = False
            if arg.volume_id in model and model[arg.volume_id][0] != key:
                other, _, count = model[arg.volume_id]
                full.append((other, count))
                model[arg.volume_id] = (key, now_ns, 0)  # in place: a dict keeps the order
                ready = True
            _, opened_ns, count = model.get(arg.volume_id, (key, now_ns, 0))
            model[arg.volume_id] = (key, opened_ns, count + 1)
            if count + 1 == max_events:
                del model[arg.volume_id]
                full.append((key, max_events))
                ready = True
            assert batcher.add_event(arg, now_ns) is ready
            added.append(arg)
        else:
            taken = batcher.take_ready(now_ns, everything=arg)
            aged = [v for v, (_, opened_ns, _) in model.items()
                    if arg or now_ns - opened_ns >= max_age_ns]
            want = full + [(model[v][0], model[v][2]) for v in aged]
            assert [(key_of(r), len(r["op"])) for r in taken] == want
            model = {k: v for k, v in model.items() if k not in aged}
            full = []
            records += taken
            taken_events += sum(len(r["op"]) for r in taken)
        assert batcher.buffered_events == len(added) - taken_events
    records += batcher.take_ready(now_ns, everything=True)
    assert batcher.buffered_events == 0
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert all(1 <= len(r["op"]) <= max_events for r in records)
    for key in KEYS:  # per (volume, tenant, host) buffer: the same events in the same order
        want_events = [e for e in added if (e.volume_id, e.tenant_id, e.host_id) == key]
        assert [e for r in records if key_of(r) == key for e in events_of(r)] == want_events
    assert sorted(map(repr, (e for r in records for e in events_of(r)))) == sorted(
        map(repr, added))
