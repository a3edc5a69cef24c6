"""From raw IoBatch records to volume states and dead letters, against the oracle."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.codec import SchemaSet
from streams.core.counters import VolumeState
from streams.core.events import OPS, STATUSES, IoEvent
from streams.core.ingest import (
    DEAD_LETTER_MAX_BYTES,
    MAX_LISTED_EVENTS,
    PAYLOAD_PREFIX_BYTES,
    Limits,
    Placement,
    RecordOutcome,
    account_record,
    batch_error,
    dead_letter_record,
    event_json,
)
from streams.sdk.batching import Batcher
from streams.sources.simulator import FleetConfig, FleetSimulator
from tests.oracles.counters import counters_oracle, oracle_reject_reason

NOW = 1_700_000_000 * 10**9
WEEK = 7 * 24 * 3600 * 10**9
FIVE_MIN = 300 * 10**9
SCHEMAS = SchemaSet()
DEFAULT_LIMITS = Limits()
NOT_IN_ORACLE = ("idle_time_ns", "rejected")
PARTITIONS = 8


def code(value: Any, names: tuple[str, ...]) -> int:
    return names.index(value) if value in names else value


def batch(events: list[dict[str, Any]], producer_id: str = "p-1", seq: int = 0,
          volume_id: str | None = None, tenant_id: str | None = None) -> dict[str, Any]:
    """An IoBatch record of canonical events (op/status names or raw integer codes)."""
    first = events[0] if events else {}
    return {
        "producer_id": producer_id, "seq": seq,
        "volume_id": first.get("volume_id", "vol-1") if volume_id is None else volume_id,
        "tenant_id": first.get("tenant_id", "t-1") if tenant_id is None else tenant_id,
        "host_id": first.get("host_id"),
        "op": bytes(code(e["op"], OPS) for e in events),
        "status": bytes(code(e["status"], STATUSES) for e in events),
        "offset": [e["offset"] for e in events], "bytes": [e["bytes"] for e in events],
        "submit_ns": [e["submit_ns"] for e in events],
        "complete_ns": [e["complete_ns"] for e in events],
    }


def ev(op: Any = "read", status: Any = "ok", offset: int = 8192, nbytes: int = 4096,
       submit_ns: int = NOW - 1_000, complete_ns: int = NOW - 750,
       volume_id: str = "vol-1", tenant_id: str = "t-1") -> dict[str, Any]:
    """One canonical event; defaults give a valid 250 ns ok read of 4 KiB of vol-1."""
    return {"volume_id": volume_id, "tenant_id": tenant_id, "host_id": "h-1", "op": op,
            "status": status, "offset": offset, "bytes": nbytes, "submit_ns": submit_ns,
            "complete_ns": complete_ns}


def encode(record: dict[str, Any]) -> bytes:
    return SCHEMAS.encode("IoBatch", record)


def placed(payload: bytes) -> Placement:
    """Where a producer with the default partitioner puts ``payload`` (any, if undecodable)."""
    try:
        volume_id = SCHEMAS.decode(payload, expect="IoBatch")[1]["volume_id"]
    except ValueError:
        return Placement(None, 0, PARTITIONS)
    return Placement.of(volume_id, PARTITIONS)


class Table:
    """A stand-in for the Faust table: volume_id -> state snapshot bytes."""

    def __init__(self) -> None:
        self.snapshots: dict[str, bytes] = {}

    def load(self, volume_id: str) -> VolumeState | None:
        data = self.snapshots.get(volume_id)
        return None if data is None else VolumeState.from_snapshot(data)

    def apply(self, payload: bytes, now_ns: int = NOW, limits: Limits = DEFAULT_LIMITS,
              placement: Placement | None = None) -> RecordOutcome:
        """One record, by default where its producer would put it."""
        outcome = account_record(payload, placement or placed(payload), self.load, SCHEMAS,
                                 now_ns, limits)
        if outcome.state is not None:
            assert outcome.volume_id is not None
            self.snapshots[outcome.volume_id] = outcome.state.snapshot()
        return outcome

    def counters(self, reference_ns: int = NOW) -> dict[str, dict[str, Any]]:
        """Public counters of every volume, without the keys the oracle lacks."""
        result = {}
        for volume_id in self.snapshots:
            state = self.load(volume_id)
            assert state is not None
            obj = state.counters_json(volume_id, reference_ns)
            result[volume_id] = {k: v for k, v in obj.items() if k not in NOT_IN_ORACLE}
        # volumes whose events were all rejected have a state but no oracle row
        return {v: c for v, c in result.items() if c["last_io_ns"] is not None}


def split(events: list[dict[str, Any]], sizes: list[int]) -> list[list[dict[str, Any]]]:
    """Cut one volume's events into consecutive chunks of the given sizes (cycled)."""
    chunks, start, k = [], 0, 0
    while start < len(events):
        chunks.append(events[start:start + sizes[k % len(sizes)]])
        start, k = start + sizes[k % len(sizes)], k + 1
    return chunks


def records_of(events: list[dict[str, Any]], sizes: list[int], rng: random.Random,
               producers: int) -> list[bytes]:
    """Batch per volume in arbitrary sizes, interleave volumes at random, stamp seqs."""
    per_volume: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        per_volume.setdefault(event["volume_id"], []).append(event)
    queues = [split(evs, sizes) for evs in per_volume.values()]
    next_seq = [0] * producers
    payloads = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        producer = rng.randrange(producers)
        payloads.append(encode(batch(queue.pop(0), f"p-{producer}", next_seq[producer])))
        next_seq[producer] += 1
    return payloads


# --- the counters equal the oracle -------------------------------------------------------------

# a seed, not st.randoms(): the simulator stream needs thousands of draws per example
seeds = st.integers(0, 2**32)
START_NS = NOW - 60 * 10**9
FLEET = FleetConfig(seed=11, volumes=12, tenants=4, hosts=3, start_ns=START_NS,
                    failed_rate=0.05, invalid_rate=0.05, events_per_s=2000.0)


@lru_cache(maxsize=1)
def fleet_events() -> tuple[list[dict[str, Any]], int]:
    """3,000 simulator events (every op and status) and the simulator's clock after them."""
    sim = FleetSimulator(FLEET)
    events = [e.to_json() for e in sim.events(3000)]
    return events, sim.now_ns


def test_fleet_covers_every_op_and_status() -> None:
    events, _ = fleet_events()
    assert {(e["op"], e["status"]) for e in events} == {(o, s) for o in OPS for s in STATUSES}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=8), seeds,
       st.integers(1, 3))
def test_simulator_stream_in_any_batching_gives_the_oracle_counters(
    sizes: list[int], seed: int, producers: int,
) -> None:
    events, now_ns = fleet_events()
    table = Table()
    for payload in records_of(events, sizes, random.Random(seed), producers):
        outcome = table.apply(payload, now_ns)
        assert not outcome.replay and not outcome.rejections
    assert table.counters(now_ns) == counters_oracle(events, now_ns=now_ns)


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 64), st.integers(0, 2 * 10**9))
def test_simulator_through_the_batcher_gives_the_oracle_counters(
    max_events: int, max_age_ns: int,
) -> None:
    events, now_ns = fleet_events()
    batcher = Batcher("p-1", max_events, max_age_ns)
    table = Table()
    for event in events:
        batcher.add_event(IoEvent(**event), event["complete_ns"])
        for record in batcher.take_ready(event["complete_ns"]):
            table.apply(encode(record), now_ns)
    for record in batcher.take_ready(now_ns, everything=True):
        table.apply(encode(record), now_ns)
    assert table.counters(now_ns) == counters_oracle(events, now_ns=now_ns)


VOLUMES = {"vol-a": "t-1", "vol-b": "t-2", "vol-c": "t-1"}


@st.composite
def mixed_events(draw: st.DrawFn) -> dict[str, Any]:
    """Valid events of three volumes, about half of them breaking one rule or more."""
    volume_id = draw(st.sampled_from(sorted(VOLUMES)))
    # sampled_from picks evenly, so repeating the good values sets the odds
    op = draw(st.sampled_from(OPS * 6 + (4, 255)))
    status = draw(st.sampled_from(STATUSES * 8 + (3,)))
    flush = op == "flush" and draw(st.sampled_from((True, True, True, False)))
    offset, nbytes = (0, 0) if flush else (draw(st.integers(-2, 2**40)),
                                           draw(st.integers(-2, 2**40)))
    complete_ns = draw(st.sampled_from((NOW - WEEK, NOW - WEEK - 1, NOW + FIVE_MIN,
                                        NOW + FIVE_MIN + 1) + (None,) * 12))
    if complete_ns is None:
        complete_ns = draw(st.integers(NOW - WEEK, NOW + FIVE_MIN))
    submit_ns = complete_ns - draw(st.sampled_from((-1,) + (0,) * 4) | st.integers(0, 10**9))
    return ev(op, status, offset, nbytes, submit_ns, complete_ns, volume_id, VOLUMES[volume_id])


@settings(max_examples=60, deadline=None)
@given(st.lists(mixed_events(), max_size=80), st.lists(st.integers(1, 12), min_size=1),
       seeds)
def test_mixed_events_count_like_the_oracle_and_reject_the_rest(
    events: list[dict[str, Any]], sizes: list[int], seed: int,
) -> None:
    table = Table()
    rejected_indexes: list[int] = []
    counted = 0
    for payload in records_of(events, sizes, random.Random(seed), 2):
        outcome = table.apply(payload)
        _, record = SCHEMAS.decode(payload)
        counted += outcome.counted
        assert len(outcome.rejections) <= 1  # a record's bad events: one dead letter
        for rejection in outcome.rejections:
            assert not rejection.whole and rejection.events == len(rejection.event_indexes)
            assert len(rejection.event_reasons) == rejection.events
            assert rejection.event_json == event_json(record, rejection.event_indexes[0])
            for i in rejection.event_indexes:
                assert oracle_reject_reason(orjson.loads(event_json(record, i)), NOW) is not None
            rejected_indexes += rejection.event_indexes
        rejected = sum(r.events for r in outcome.rejections)
        assert outcome.counted + rejected == len(record["op"])
    assert table.counters() == counters_oracle(events, now_ns=NOW)
    bad = [e for e in events if oracle_reject_reason(e, NOW) is not None]
    assert len(rejected_indexes) == len(bad) and counted == len(events) - len(bad)
    for volume_id in VOLUMES:
        state = table.load(volume_id)
        want = sum(1 for e in bad if e["volume_id"] == volume_id)
        assert (state.rejected if state else 0) == want


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10**12), st.integers(1, 10**12), st.integers(-(10**12), 10**12))
def test_custom_limits(retention_ns: int, future_ns: int, age_ns: int) -> None:
    event = ev(submit_ns=NOW - age_ns - 5, complete_ns=NOW - age_ns)
    outcome = Table().apply(encode(batch([event])), NOW, Limits(retention_ns, future_ns))
    accepted = oracle_reject_reason(event, NOW, retention_ns, future_ns) is None
    assert outcome.counted == int(accepted) and len(outcome.rejections) == int(not accepted)
    assert all(not r.whole for r in outcome.rejections)


# --- replaying a batch twice changes nothing -------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.lists(mixed_events(), min_size=1, max_size=40), st.lists(st.integers(1, 8), min_size=1),
       seeds, st.data())
def test_replaying_any_record_changes_nothing(
    events: list[dict[str, Any]], sizes: list[int], seed: int, data: st.DataObject,
) -> None:
    payloads = records_of(events, sizes, random.Random(seed), 2)
    table = Table()
    for payload in payloads:
        table.apply(payload)
        before = dict(table.snapshots)
        again = table.apply(payload)  # at-least-once delivery: the same record right away
        assert again.replay and again.state is None and again.counted == 0
        assert not again.rejections and table.snapshots == before
    before = dict(table.snapshots)
    for payload in data.draw(st.lists(st.sampled_from(payloads), max_size=10)):
        volume_id = SCHEMAS.decode(payload)[1]["volume_id"]
        state = table.load(volume_id)
        assert state is not None
        in_memory = state.snapshot()
        outcome = account_record(payload, placed(payload), lambda _: state,  # noqa: B023
                                 SCHEMAS, NOW)
        assert outcome.replay and outcome.state is None and outcome.volume_id == volume_id
        assert state.snapshot() == in_memory  # the loaded state was not touched either
    assert table.snapshots == before
    assert table.counters() == counters_oracle(events, now_ns=NOW)


def test_two_producers_interleave() -> None:
    table = Table()
    a = [encode(batch([ev(nbytes=10**k)], "p-a", k)) for k in range(3)]
    b = [encode(batch([ev("write", nbytes=10**k)], "p-b", k)) for k in range(2)]
    for payload in (a[0], b[0], a[1], b[1], a[2]):  # interleaved: all new
        assert not table.apply(payload).replay
    for payload in (b[0], a[1], a[0], b[1], a[2]):  # any of them again: all replays
        assert table.apply(payload).replay
    counters = table.counters()["vol-1"]
    assert (counters["read_ios"], counters["read_bytes"]) == (3, 111)
    assert (counters["write_ios"], counters["write_bytes"]) == (2, 11)
    state = table.load("vol-1")
    assert state is not None and state.producer_seqs == {"p-a": 2, "p-b": 1}


def test_a_seq_below_the_highest_applied_is_a_replay() -> None:
    """Seqs grow in send order, so a lower one can only be a copy of an applied record."""
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 5)))
    assert table.apply(encode(batch([ev()], "p-1", 3))).replay
    assert not table.apply(encode(batch([ev()], "p-1", 6))).replay


def test_seqs_are_per_volume() -> None:
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 5)))
    other = ev(volume_id="vol-2")
    assert not table.apply(encode(batch([other], "p-1", 0))).replay


# --- rejections of events inside an accepted record ------------------------------------------

def test_bad_events_make_one_rejection_and_the_rest_are_counted() -> None:
    events = [
        ev(),  # counted
        ev(nbytes=-5),  # rejected: negative bytes
        ev("write"),  # counted
        ev(status=3),  # rejected: unknown status code
        ev("flush", offset=0, nbytes=0),  # counted
        ev(submit_ns=NOW + FIVE_MIN, complete_ns=NOW + FIVE_MIN + 1),  # rejected: future
    ]
    record = batch(events)
    payload = encode(record)
    outcome = Table().apply(payload)
    assert outcome.counted == 3 and outcome.volume_id == "vol-1"
    [rejection] = outcome.rejections  # one dead letter for all three, not one each
    assert rejection.event_indexes == [1, 3, 5] and rejection.events == 3
    assert rejection.event_reasons[:2] == [
        "bytes -5 is negative", "status code 3 is not one of ok/failed/invalid"]
    assert "in the future" in rejection.event_reasons[2]
    assert rejection.reason == "3 of 6 event(s) rejected; event 1: bytes -5 is negative"
    assert not rejection.whole and rejection.payload == payload
    assert rejection.batch is not None and rejection.batch["seq"] == record["seq"]
    assert rejection.event_json is not None
    assert orjson.loads(rejection.event_json) == {**events[1], "host_id": "h-1"}
    assert outcome.state is not None and outcome.state.rejected == 3
    assert outcome.state.counters_json("vol-1", NOW)["read_ios"] == 1


def test_a_record_of_only_bad_events_still_applies_and_lists_at_most_the_cap() -> None:
    n = MAX_LISTED_EVENTS + 57
    outcome = Table().apply(encode(batch([ev(nbytes=-1)] * n)))
    [rejection] = outcome.rejections
    assert rejection.events == n and outcome.counted == 0
    assert rejection.event_indexes == list(range(MAX_LISTED_EVENTS))
    assert len(rejection.event_reasons) == MAX_LISTED_EVENTS
    # the record was applied: its events are judged, the volume's rejected counts them all
    assert outcome.state is not None and outcome.state.rejected == n


# --- records rejected whole: no state changes at all -----------------------------------------

@pytest.mark.parametrize(("record", "words"), [
    (batch([ev()] * 2, volume_id="vol/1"), "volume_id 'vol/1' has characters outside"),  # bad id
    (batch([ev()] * 2, volume_id="v" * 129), "volume_id must be 1..128 characters"),  # too long
    (batch([ev()] * 2, tenant_id="t#1"), "tenant_id 't#1' has characters outside"),  # bad tenant
    ({**batch([ev()] * 3), "bytes": [1, 2]}, "columns of unequal length"),  # a short column
    ({**batch([ev()] * 2), "op": b"\x00"}, "op=1, status=2"),  # a short op column
    (batch([]), "empty batch"),  # zero events: would claim the volume before its first I/O
])
def test_a_bad_batch_is_rejected_whole(record: dict[str, Any], words: str) -> None:
    payload = encode(record)
    table = Table()
    outcome = table.apply(payload, placement=Placement(record["volume_id"].encode(), 0, 1))
    assert outcome.state is None and outcome.counted == 0 and not outcome.replay
    [rejection] = outcome.rejections
    assert words in rejection.reason and rejection.whole
    assert rejection.events == len(record["op"]) and rejection.payload == payload
    assert rejection.event_json is None and table.snapshots == {}  # no volume created


@pytest.mark.parametrize(("payload", "words"), [
    pytest.param(b"", "not Avro single-object encoded", id="empty"),
    pytest.param(b'{"volume_id":"vol-1"}', "not Avro single-object encoded", id="JSON"),
    pytest.param(encode(batch([ev()]))[:-1], "undecodable IoBatch body", id="truncated"),
    pytest.param(b"\xc3\x01" + b"\x07" * 8 + encode(batch([ev()]))[10:],
                 "unknown writer schema fingerprint", id="wrong fingerprint"),
    pytest.param(SCHEMAS.encode("DeadLetter", {
        "reason": "r", "source_topic": "t", "source_partition": 0, "source_offset": 0,
        "rejected_at_ns": 0, "events": 0}), "expected a IoBatch record, got DeadLetter",
        id="a record of the wrong type"),
])
def test_an_undecodable_record_is_rejected_whole(payload: bytes, words: str) -> None:
    outcome = Table().apply(payload)
    assert outcome.state is None and outcome.volume_id is None
    [rejection] = outcome.rejections
    assert words in rejection.reason
    assert rejection.events == 0 and rejection.payload == payload and rejection.batch is None


def test_events_per_record_are_capped() -> None:
    limits = Limits(max_events_per_record=3)
    table = Table()
    assert table.apply(encode(batch([ev()] * 3, "p-1", 0)), limits=limits).counted == 3
    before = dict(table.snapshots)
    outcome = table.apply(encode(batch([ev()] * 4, "p-1", 1)), limits=limits)
    [rejection] = outcome.rejections
    assert rejection.reason == "4 events in one record, more than the limit of 3"
    assert rejection.events == 4 and outcome.counted == 0 and table.snapshots == before
    assert Limits().max_events_per_record == 100_000


def test_tenant_mismatch_changes_nothing_even_with_the_highest_seq() -> None:
    """A forged record of another tenant with seq 2**63-1 used to move the producer's mark
    and freeze the volume: every later good record was skipped as a replay."""
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 0)))
    before = dict(table.snapshots)
    payload = encode(batch([ev(tenant_id="t-2")] * 4, "p-1", 2**63 - 1))
    outcome = table.apply(payload)
    [rejection] = outcome.rejections
    assert rejection.reason == "volume vol-1 belongs to tenant t-1, not t-2"
    assert rejection.events == 4 and rejection.payload == payload and outcome.counted == 0
    assert outcome.state is None and table.snapshots == before  # byte-identical
    after = table.apply(encode(batch([ev()], "p-1", 1)))  # the producer's next good record
    assert after.counted == 1 and not after.replay
    assert table.counters()["vol-1"]["read_ios"] == 2
    state = table.load("vol-1")
    assert state is not None and state.rejected == 0 and state.producer_seqs == {"p-1": 1}


@pytest.mark.parametrize("breakage", [
    {"bytes": [4096]},   # columns of unequal length
    {"tenant_id": ""},   # an invalid tenant id
    {"op": b"", "status": b"", "offset": [], "bytes": [], "submit_ns": [],
     "complete_ns": []},  # no events
])
def test_a_bad_batch_of_a_known_volume_changes_nothing(breakage: dict[str, Any]) -> None:
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 0)))
    before = dict(table.snapshots)
    payload = encode({**batch([ev(), ev()], "p-1", 10**12), **breakage})
    outcome = table.apply(payload)
    assert len(outcome.rejections) == 1 and outcome.counted == 0 and outcome.state is None
    assert table.snapshots == before
    assert table.apply(encode(batch([ev()], "p-1", 1))).counted == 1  # not frozen


@pytest.mark.parametrize(("placement", "words"), [
    (Placement(None, Placement.of("vol-1", PARTITIONS).partition, PARTITIONS),
     "key none is not the volume id 'vol-1'"),
    (Placement(b"vol-2", Placement.of("vol-1", PARTITIONS).partition, PARTITIONS),
     "key b'vol-2' is not the volume id 'vol-1'"),
    (Placement(b"vol-1", (Placement.of("vol-1", PARTITIONS).partition + 1) % PARTITIONS,
               PARTITIONS), "is not the default partition"),
])
def test_a_record_keyed_or_placed_apart_from_its_volume_is_rejected_whole(
    placement: Placement, words: str,
) -> None:
    """Counted where it sits, it would be a second set of counters for the volume."""
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 0)))
    before = dict(table.snapshots)
    outcome = table.apply(encode(batch([ev()], "p-1", 1)), placement=placement)
    [rejection] = outcome.rejections
    assert words in rejection.reason and rejection.whole
    assert outcome.state is None and outcome.counted == 0 and table.snapshots == before
    assert outcome.events is None  # the windows do not see it either
    assert table.apply(encode(batch([ev()], "p-1", 1))).counted == 1


def test_placement_of_is_the_default_partition() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(PARTITIONS))
    for volume_id in ("vol-1", "vol-2", "a", "x" * 128):
        want = DefaultPartitioner()(volume_id.encode(), partitions, partitions)
        assert Placement.of(volume_id, PARTITIONS) == Placement(
            volume_id.encode(), want, PARTITIONS)


# --- replays with other content --------------------------------------------------------------

def test_the_last_seq_with_other_content_is_a_conflict() -> None:
    table = Table()
    applied = encode(batch([ev()], "p-1", 7))
    table.apply(applied)
    before = dict(table.snapshots)
    other = encode(batch([ev(nbytes=8192)], "p-1", 7))
    outcome = table.apply(other)
    [rejection] = outcome.rejections
    assert rejection.reason == "seq 7 of producer p-1 was applied with other content"
    assert rejection.events == 1 and rejection.payload == other and rejection.whole
    assert outcome.state is None and not outcome.replay and outcome.events is None
    assert table.snapshots == before
    again = table.apply(applied)  # the record that was applied, again: a plain replay
    assert again.replay and not again.rejections and table.snapshots == before


def test_a_lower_seq_with_other_content_cannot_be_checked() -> None:
    """Only the last applied record's digest is kept (README: Rejections)."""
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 7)))
    table.apply(encode(batch([ev()], "p-1", 8)))
    outcome = table.apply(encode(batch([ev(nbytes=8192)], "p-1", 7)))
    assert outcome.replay and not outcome.rejections and outcome.counted == 0


# --- property: a rejected record changes no state ---------------------------------------------

def _hostile(kind: str, seq: int, rng: random.Random) -> tuple[bytes, Placement]:
    """One record to reject whole, of ``kind``, for vol-1 (owned by t-1, producer p-1)."""
    if kind == "tenant":
        payload = encode(batch([ev(tenant_id="t-2")], "p-1", seq))
    elif kind == "empty":
        payload = encode(batch([], "p-1", seq, volume_id="vol-1", tenant_id="t-1"))
    elif kind == "unequal":
        payload = encode({**batch([ev(), ev()], "p-1", seq), "bytes": [1]})
    elif kind == "conflict":
        payload = encode(batch([ev(nbytes=rng.randrange(1, 10**6) * 2 + 1)], "p-1", 3))
    elif kind == "garbage":
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
    else:
        payload = encode(batch([ev()], "p-1", seq))
    placement = placed(payload)
    if kind == "key":
        placement = Placement(b"vol-9", placement.partition, PARTITIONS)
    elif kind == "partition":
        placement = Placement(placement.key, (placement.partition + 3) % PARTITIONS, PARTITIONS)
    return payload, placement


def _loading_into(table: Table, states: dict[str, VolumeState | None],
                  ) -> Callable[[str], VolumeState | None]:
    """table.load, remembering each state it handed out in ``states``."""
    def load(volume_id: str) -> VolumeState | None:
        states[volume_id] = table.load(volume_id)
        return states[volume_id]

    return load


HOSTILE_KINDS = ("tenant", "empty", "unequal", "conflict", "garbage", "key", "partition")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(HOSTILE_KINDS),
                          st.sampled_from((0, 3, 4, 2**31, 2**63 - 1)) | st.integers(0, 2**63 - 1)),
                min_size=1, max_size=6), seeds)
def test_a_rejected_record_leaves_every_snapshot_byte_identical(
    hostile: list[tuple[str, int]], seed: int,
) -> None:
    rng = random.Random(seed)
    table = Table()
    for seq in range(4):  # p-1 applied 0..3 on vol-1; vol-2 has its own state
        table.apply(encode(batch([ev(nbytes=4096 * (seq + 1))], "p-1", seq)))
    table.apply(encode(batch([ev(volume_id="vol-2", tenant_id="t-2")], "p-1", 0)))
    for kind, seq in hostile:
        before = dict(table.snapshots)
        payload, placement = _hostile(kind, seq, rng)
        states: dict[str, VolumeState | None] = {}
        outcome = account_record(payload, placement, _loading_into(table, states), SCHEMAS, NOW)
        assert outcome.state is None and outcome.counted == 0 and outcome.events is None
        assert len(outcome.rejections) == 1 and outcome.rejections[0].whole, kind
        assert table.snapshots == before  # byte-identical
        for volume_id, state in states.items():  # what it loaded was not touched either
            assert (state.snapshot() if state else None) == before.get(volume_id)
    good = table.apply(encode(batch([ev()], "p-1", 4)))  # the producer goes on as before
    assert good.counted == 1 and not good.rejections


# --- dead letters ----------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    pytest.param(encode(batch([ev(), ev(op=9), ev(nbytes=-1)])), id="per-event rejections"),
    pytest.param(encode(batch([ev()], volume_id="")), id="a whole batch rejected"),
    pytest.param(encode(batch([ev()]))[:-3], id="an undecodable record"),
])
def test_dead_letter_records_encode_with_the_dead_letter_schema(payload: bytes) -> None:
    import hashlib

    table = Table()
    table.apply(encode(batch([ev()], "p-0", 0, tenant_id="t-1")))
    outcome = table.apply(payload)
    [rejection] = outcome.rejections
    record = dead_letter_record(rejection, "ioacct.io.raw", 3, 100, NOW)
    name, decoded = SCHEMAS.decode(SCHEMAS.encode("DeadLetter", record), expect="DeadLetter")
    assert decoded == record
    assert (record["source_topic"], record["source_partition"]) == ("ioacct.io.raw", 3)
    assert record["reason"] == rejection.reason and record["events"] == rejection.events
    # nothing dropped silently: the record is identified whole, its bad events listed
    assert record["payload"] == payload and record["payload_length"] == len(payload)
    assert record["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["event_indexes"] == rejection.event_indexes
    assert record["event_reasons"] == rejection.event_reasons
    assert (record["event_json"] is None) == rejection.whole


def test_dead_letter_of_a_tenant_mismatch() -> None:
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 0)))
    payload = encode(batch([ev(tenant_id="t-9")], "p-1", 1))
    [rejection] = table.apply(payload).rejections
    record = dead_letter_record(rejection, "raw", 0, 42, NOW)
    assert SCHEMAS.decode(SCHEMAS.encode("DeadLetter", record))[1] == record
    assert (record["volume_id"], record["tenant_id"], record["producer_id"], record["seq"]) == (
        "vol-1", "t-9", "p-1", 1)
    assert record["payload"] == payload and record["event_index"] is None


@st.composite
def any_hostile_payload(draw: st.DrawFn) -> bytes:
    """Raw values of any size up to past the broker's 1 MB, decodable or not, with
    oversized ids, host ids and numbers of bad events."""
    rng = random.Random(draw(seeds))
    shape = draw(st.sampled_from(("bytes", "long ids", "bad events", "long host")))
    if shape == "bytes":
        size = draw(st.sampled_from((0, 1, 4095, 4096, 4097, 1_048_576)) | st.integers(0, 1 << 21))
        return rng.randbytes(size)
    if shape == "long ids":
        size = draw(st.integers(129, 1 << 20))
        return encode({**batch([ev()] * 3), "volume_id": "v" * size, "tenant_id": "t" * size,
                       "producer_id": "p" * size})
    if shape == "bad events":
        return encode(batch([ev(nbytes=-1 - k) for k in range(draw(st.integers(1, 5000)))]))
    host = "h" * draw(st.integers(1, 1 << 20))
    return encode({**batch([ev(nbytes=-1), ev()]), "host_id": host})


@settings(max_examples=40, deadline=None)
@given(any_hostile_payload())
def test_no_dead_letter_exceeds_its_bound_whatever_the_payload(payload: bytes) -> None:
    outcome = Table().apply(payload)
    assert outcome.rejections
    for rejection in outcome.rejections:
        record = dead_letter_record(rejection, "ioacct.io.raw", 7, 2**62, NOW)
        encoded = SCHEMAS.encode("DeadLetter", record)
        assert len(encoded) <= DEAD_LETTER_MAX_BYTES
        assert record["payload"] == payload[:PAYLOAD_PREFIX_BYTES]
        assert record["payload_length"] == len(payload)


def test_a_dead_letter_near_the_broker_limit_is_small() -> None:
    payload = encode(batch([ev(nbytes=-1)] * 30_000))  # ~1 MB: as large as a producer sends
    assert len(payload) > 500_000
    [rejection] = Table().apply(payload).rejections
    encoded = SCHEMAS.encode("DeadLetter", dead_letter_record(rejection, "raw", 0, 1, NOW))
    assert len(encoded) < 32 * 1024 and rejection.events == 30_000


@pytest.mark.parametrize(("event", "shown"), [
    (ev(), {}),  # known codes shown as names
    (ev(op=7), {"op": 7}),  # unknown op code shown raw
    (ev(status=200), {"status": 200}),  # unknown status code shown raw
])
def test_event_json_is_the_canonical_form(event: dict[str, Any], shown: dict[str, Any]) -> None:
    record = batch([ev(), event])
    assert orjson.loads(event_json(record, 1)) == {**event, **shown}


@pytest.mark.parametrize(("record", "error"), [
    (batch([ev()]), None),  # a good batch
    (batch([]), "empty batch"),  # zero events: refused
    ({**batch([ev()]), "complete_ns": []}, "complete_ns=0"),  # one column short
    (batch([ev()], volume_id=""), "volume_id must be 1..128 characters, got 0"),  # empty id
])
def test_batch_error(record: dict[str, Any], error: str | None) -> None:
    reason = batch_error(record)
    assert reason is None if error is None else error in (reason or "")
