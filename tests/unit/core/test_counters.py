"""Cumulative counters of one volume (SEMANTICS.md section 2), against the brute-force oracle."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.batch import EventBatch
from streams.core.counters import COUNTER_NAMES, LATENCY_SLOTS, VolumeState, record_digest
from streams.core.events import OP_CODE, OPS, STATUS_CODE, STATUSES
from tests.oracles.counters import counters_oracle, empty_counters

NOW = 1_700_000_000 * 10**9
NOT_IN_ORACLE = ("idle_time_ns", "rejected")


def ev(op: str = "read", status: str = "ok", offset: int = 8192, nbytes: int = 4096,
       submit_ns: int = NOW - 1_000, complete_ns: int = NOW - 750) -> dict[str, Any]:
    """One canonical event of vol-1; defaults give a 250 ns ok read of 4 KiB."""
    return {"volume_id": "vol-1", "tenant_id": "t-1", "op": op, "status": status,
            "offset": offset, "bytes": nbytes, "submit_ns": submit_ns, "complete_ns": complete_ns}


def add(state: VolumeState, events: list[dict[str, Any]]) -> None:
    """Count canonical events (already valid) the way the worker does: as columns."""
    state.add_events(EventBatch(
        "vol-1", "t-1",
        bytes(OP_CODE[e["op"]] for e in events), bytes(STATUS_CODE[e["status"]] for e in events),
        [e["bytes"] for e in events], [e["submit_ns"] for e in events],
        [e["complete_ns"] for e in events], range(len(events)),
    ))


def public(state: VolumeState, reference_ns: int = NOW) -> dict[str, Any]:
    """counters_json without the keys the oracle does not compute."""
    obj = state.counters_json("vol-1", reference_ns)
    return {k: v for k, v in obj.items() if k not in NOT_IN_ORACLE}


def test_counter_names_are_the_contract_names_in_order() -> None:
    oracle_names = [k for k in empty_counters("v", "t") if k not in ("volume_id", "tenant_id",
                                                                     "last_io_ns")]
    assert [name for name, _ in COUNTER_NAMES] == oracle_names
    assert "flush_bytes" not in dict(COUNTER_NAMES)
    slots = [slot for _, slot in COUNTER_NAMES]
    assert len(set(slots)) == len(slots)


def test_fresh_state_is_all_zero() -> None:
    state = VolumeState("t-1")
    obj = state.counters_json("vol-1", NOW)
    assert obj == {"volume_id": "vol-1", "tenant_id": "t-1", **dict.fromkeys(
        [name for name, _ in COUNTER_NAMES], 0), "last_io_ns": None, "idle_time_ns": None,
        "rejected": 0}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("status", STATUSES)
def test_one_event_of_each_op_and_status(op: str, status: str) -> None:
    event = ev(op, status, 0, 0) if op == "flush" else ev(op, status)
    state = VolumeState("t-1")
    add(state, [event])
    assert public(state) == counters_oracle([event], now_ns=NOW)["vol-1"]


@pytest.mark.parametrize(("events", "nonzero"), [
    # ok, failed and invalid reads: time from ok+failed only, bytes from ok only
    ([ev(status="ok"), ev(status="failed"), ev(status="invalid")],
     {"read_ios": 1, "read_bytes": 4096, "read_ios_error": 1, "invalid_read_ios": 1,
      "total_read_time_ns": 500}),
    # zero-latency, zero-byte write
    ([ev("write", nbytes=0, submit_ns=NOW, complete_ns=NOW)], {"write_ios": 1}),
    # an ok flush has time but no bytes counter
    ([ev("flush", offset=0, nbytes=0)], {"flush_ios": 1, "total_flush_time_ns": 250}),
    # two discards add their bytes
    ([ev("discard", nbytes=1 << 20), ev("discard", nbytes=1 << 21)],
     {"discard_ios": 2, "discard_bytes": 3 << 20, "total_discard_time_ns": 500}),
])
def test_counters_by_hand(events: list[dict[str, Any]], nonzero: dict[str, int]) -> None:
    state = VolumeState("t-1")
    add(state, events)
    counters = {name: state.counters[slot] for name, slot in COUNTER_NAMES}
    assert counters == {**dict.fromkeys(counters, 0), **nonzero}


def test_only_the_given_indexes_count() -> None:
    events = [ev(nbytes=1, complete_ns=NOW - 3), ev("write", nbytes=10, complete_ns=NOW - 2),
              ev(nbytes=100, complete_ns=NOW - 1)]
    state = VolumeState("t-1")
    state.add_events(EventBatch("vol-1", "t-1", b"\x00\x01\x00", b"\x00\x00\x00", [1, 10, 100],
                                [NOW - 1_000] * 3, [NOW - 3, NOW - 2, NOW - 1], [0, 2]))
    assert public(state) == counters_oracle([events[0], events[2]])["vol-1"]


# --- last_io_ns and idle time -----------------------------------------------------------------

@pytest.mark.parametrize(("events", "last_io_ns"), [
    ([ev(complete_ns=NOW - 10)], NOW - 10),  # one event
    ([ev(complete_ns=NOW - 10), ev(status="invalid", submit_ns=NOW - 6, complete_ns=NOW - 5)],
     NOW - 5),  # the latest is invalid: still I/O activity
    ([ev(complete_ns=NOW - 10), ev(status="failed", submit_ns=NOW - 6, complete_ns=NOW - 4)],
     NOW - 4),  # the latest failed
    ([ev(complete_ns=NOW - 10), ev(complete_ns=NOW - 500)], NOW - 10),  # an older one arrives late
    ([ev(submit_ns=0, complete_ns=0)], 0),  # the epoch itself
])
def test_last_io_ns_is_the_largest_complete_ns_of_any_status(
    events: list[dict[str, Any]], last_io_ns: int,
) -> None:
    state = VolumeState("t-1")
    for event in events:  # one event per batch, in arrival order
        add(state, [event])
    assert state.last_io_ns == last_io_ns
    assert state.last_io_ns == counters_oracle(events)["vol-1"]["last_io_ns"]


def test_last_io_ns_before_the_epoch() -> None:
    event = ev(submit_ns=-10, complete_ns=-5)
    state = VolumeState("t-1")
    add(state, [event])
    assert state.last_io_ns == counters_oracle([event])["vol-1"]["last_io_ns"] == -5


@pytest.mark.parametrize(("complete_ns", "reference_ns", "idle_time_ns"), [
    (NOW - 750, NOW, 750),  # idle since the last completion
    (NOW, NOW, 0),  # queried at the very completion
    (NOW - 10**12, NOW, 10**12),  # idle for 1000 s
])
def test_idle_time_is_reference_minus_last_io(
    complete_ns: int, reference_ns: int, idle_time_ns: int,
) -> None:
    state = VolumeState("t-1")
    add(state, [ev(status="invalid", submit_ns=complete_ns - 1, complete_ns=complete_ns)])
    obj = state.counters_json("vol-1", reference_ns)
    assert obj["idle_time_ns"] == idle_time_ns == reference_ns - obj["last_io_ns"]


# --- against the oracle ------------------------------------------------------------------------

@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    op, status = draw(st.sampled_from(OPS)), draw(st.sampled_from(STATUSES))
    flush = op == "flush"
    complete_ns = draw(st.integers(0, 2**62))
    return ev(op, status, 0 if flush else draw(st.integers(0, 2**40)),
              0 if flush else draw(st.integers(0, 2**40)),
              complete_ns - draw(st.integers(0, 10**10)), complete_ns)


@given(st.lists(valid_events(), max_size=60), st.lists(st.integers(1, 20), min_size=1))
def test_any_batching_gives_the_oracle_counters(
    events: list[dict[str, Any]], sizes: list[int],
) -> None:
    state = VolumeState("t-1")
    start, k = 0, 0
    while start < len(events):
        size = sizes[k % len(sizes)]
        add(state, events[start:start + size])
        start, k = start + size, k + 1
    if events:
        assert public(state) == counters_oracle(events)["vol-1"]
    else:
        assert state.last_io_ns is None and not any(state.counters)


# --- snapshot ----------------------------------------------------------------------------------

u63 = st.integers(0, 2**63 - 1)
states = st.builds(
    VolumeState,
    tenant_id=st.text(max_size=128),
    counters=st.lists(u63, min_size=len(OPS) * 5, max_size=len(OPS) * 5),
    last_io_ns=st.none() | st.integers(-(2**63), 2**63 - 1),
    rejected=u63,
    producer_seqs=st.dictionaries(st.text(max_size=20), st.integers(-1, 2**63 - 1), max_size=5),
    producer_digests=st.dictionaries(st.text(max_size=20), st.text(max_size=16), max_size=5),
    latency_bins=st.lists(u63, min_size=LATENCY_SLOTS, max_size=LATENCY_SLOTS),
    unbinned_time_ns=st.lists(u63, min_size=len(OPS), max_size=len(OPS)),
)


@given(states)
def test_snapshot_round_trips(state: VolumeState) -> None:
    data = state.snapshot()
    again = VolumeState.from_snapshot(data)
    assert again == state
    assert again.snapshot() == data  # byte-identical: the table value does not drift


def test_snapshot_of_a_working_state() -> None:
    state = VolumeState("t-1")
    add(state, [ev(), ev("write", "failed")])
    state.mark_applied("p-1", 4, record_digest(b"record 4"))
    state.rejected = 3
    assert VolumeState.from_snapshot(state.snapshot()) == state


def test_unknown_snapshot_version_is_refused() -> None:
    data = VolumeState("t-1").snapshot().replace(b"[3,", b"[4,", 1)
    with pytest.raises(ValueError, match="unknown volume state snapshot version 4"):
        VolumeState.from_snapshot(data)


def test_a_version_1_snapshot_still_loads_without_digests() -> None:
    """What a worker before the digests stored (written out by hand, not by this code)."""
    counters = list(range(len(OPS) * 5))
    data = (b'[1,"t-1",[' + b",".join(b"%d" % c for c in counters) + b'],' +
            b'1700000000000000000,7,{"p-1":41,"p-2":3}]')
    state = VolumeState.from_snapshot(data)
    assert state == VolumeState("t-1", counters, 1_700_000_000_000_000_000, 7,
                                {"p-1": 41, "p-2": 3}, {},
                                unbinned_time_ns=[counters[op * 5 + 4] for op in range(4)])
    # No digest known: seq 41 again is a replay, whatever its content (it cannot be checked).
    assert state.is_replay("p-1", 41) and not state.conflicts("p-1", 41, record_digest(b"x"))
    state.mark_applied("p-1", 42, record_digest(b"x"))
    again = VolumeState.from_snapshot(state.snapshot())
    assert again.snapshot().startswith(b"[3,") and again.producer_digests == {
        "p-1": record_digest(b"x")}


def test_snapshot_survives_counters_beyond_64_bits() -> None:
    state = VolumeState("t-1")
    add(state, [ev(nbytes=2**63 - 1)] * 3)
    assert VolumeState.from_snapshot(state.snapshot()) == state


# --- replay bookkeeping ------------------------------------------------------------------------

@pytest.mark.parametrize(("applied", "producer_id", "seq", "replay"), [
    ({}, "p-1", 0, False),  # nothing applied yet: seq 0 is new
    ({"p-1": 5}, "p-1", 5, True),  # the same seq again
    ({"p-1": 5}, "p-1", 4, True),  # an older seq
    ({"p-1": 5}, "p-1", 6, False),  # the next one
    ({"p-1": 5}, "p-2", 0, False),  # another producer has its own sequence
])
def test_is_replay(applied: dict[str, int], producer_id: str, seq: int, replay: bool) -> None:
    state = VolumeState("t-1", producer_seqs=dict(applied))
    assert state.is_replay(producer_id, seq) is replay
    if not replay:
        state.mark_applied(producer_id, seq, record_digest(b"applied"))
        assert state.is_replay(producer_id, seq)


@pytest.mark.parametrize(("seq", "content", "conflict"), [
    (5, b"applied", False),  # the same record again: a replay
    (5, b"other", True),  # the last seq with other content
    (4, b"other", False),  # below the last seq: no digest kept, cannot be checked
    (6, b"other", False),  # a new seq is no conflict
])
def test_conflicts(seq: int, content: bytes, conflict: bool) -> None:
    state = VolumeState("t-1")
    state.mark_applied("p-1", 5, record_digest(b"applied"))
    assert state.conflicts("p-1", seq, record_digest(content)) is conflict
    assert not state.conflicts("p-2", 5, record_digest(content))  # another producer


def test_record_digest_is_8_bytes_of_blake2b() -> None:
    import hashlib

    assert record_digest(b"abc") == hashlib.blake2b(b"abc", digest_size=8).hexdigest()
    assert len(record_digest(b"")) == 16 and record_digest(b"a") != record_digest(b"b")


def test_table_values_are_right_sized_in_memory() -> None:
    """A worker keeps one snapshot per volume: orjson's 4 KiB buffer per value would make
    that ~8x the 2 KB per volume of issue 6 (measured 15.9 KB per volume in the bench)."""
    import tracemalloc

    from streams.core.counters import VolumeState

    state = VolumeState("tenant-1", producer_seqs={"producer-1": 10**9})
    tracemalloc.start()
    try:
        snapshots = [state.snapshot() for _ in range(1000)]
        per_value = tracemalloc.get_traced_memory()[0] / len(snapshots)
    finally:
        tracemalloc.stop()
    assert per_value < 4 * len(snapshots[0])  # a right-sized copy, not a 4 KiB buffer
