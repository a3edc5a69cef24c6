"""From raw IoBatch records to volume states and dead letters, against the oracle
(records rejected whole: test_rejections.py)."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.events import OPS, STATUSES, IoEvent
from streams.core.ingest import (
    MAX_LISTED_EVENTS,
    Limits,
    Placement,
    account_record,
    event_json,
)
from streams.sdk.batching import Batcher
from streams.sources.simulator import FleetConfig, FleetSimulator
from tests.oracles.counters import counters_oracle, latency_histogram_oracle, oracle_reject_reason
from tests.unit.core.ingest_records import (
    FIVE_MIN,
    NOW,
    SCHEMAS,
    WEEK,
    Table,
    batch,
    encode,
    ev,
    placed,
    state_of,
)


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
        assert not outcome.replays and not outcome.rejections
    assert table.counters(now_ns) == counters_oracle(events, now_ns=now_ns)
    assert table.histograms() == latency_histogram_oracle(events, now_ns=now_ns)


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
    assert table.histograms() == latency_histogram_oracle(events, now_ns=now_ns)


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
    assert table.histograms() == latency_histogram_oracle(events, now_ns=NOW)
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
        assert again.replays and state_of(again) is None and again.counted == 0
        assert not again.rejections and table.snapshots == before
    before = dict(table.snapshots)
    for payload in data.draw(st.lists(st.sampled_from(payloads), max_size=10)):
        volume_id = SCHEMAS.decode(payload)[1]["volume_id"]
        state = table.load(volume_id)
        assert state is not None
        in_memory = state.snapshot()
        outcome = account_record(payload, placed(payload), lambda _: state,  # noqa: B023
                                 SCHEMAS, NOW)
        assert outcome.replays and state_of(outcome) is None
        assert outcome.volumes[0].volume_id == volume_id
        assert state.snapshot() == in_memory  # the loaded state was not touched either
    assert table.snapshots == before
    assert table.counters() == counters_oracle(events, now_ns=NOW)
    assert table.histograms() == latency_histogram_oracle(events, now_ns=NOW)


def test_two_producers_interleave() -> None:
    table = Table()
    a = [encode(batch([ev(nbytes=10**k)], "p-a", k)) for k in range(3)]
    b = [encode(batch([ev("write", nbytes=10**k)], "p-b", k)) for k in range(2)]
    for payload in (a[0], b[0], a[1], b[1], a[2]):  # interleaved: all new
        assert not table.apply(payload).replays
    for payload in (b[0], a[1], a[0], b[1], a[2]):  # any of them again: all replays
        assert table.apply(payload).replays
    counters = table.counters()["vol-1"]
    assert (counters["read_ios"], counters["read_bytes"]) == (3, 111)
    assert (counters["write_ios"], counters["write_bytes"]) == (2, 11)
    state = table.load("vol-1")
    assert state is not None and state.producer_seqs == {"p-a": 2, "p-b": 1}


def test_a_seq_below_the_highest_applied_is_a_replay() -> None:
    """Seqs grow in send order, so a lower one can only be a copy of an applied record."""
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 5)))
    assert table.apply(encode(batch([ev()], "p-1", 3))).replays
    assert not table.apply(encode(batch([ev()], "p-1", 6))).replays


def test_seqs_are_per_volume() -> None:
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 5)))
    other = ev(volume_id="vol-2")
    assert not table.apply(encode(batch([other], "p-1", 0))).replays


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
    assert outcome.counted == 3 and outcome.volumes[0].volume_id == "vol-1"
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
    assert state_of(outcome) is not None and state_of(outcome).rejected == 3
    assert state_of(outcome).counters_json("vol-1", NOW)["read_ios"] == 1


def test_a_record_of_only_bad_events_still_applies_and_lists_at_most_the_cap() -> None:
    n = MAX_LISTED_EVENTS + 57
    outcome = Table().apply(encode(batch([ev(nbytes=-1)] * n)))
    [rejection] = outcome.rejections
    assert rejection.events == n and outcome.counted == 0
    assert rejection.event_indexes == list(range(MAX_LISTED_EVENTS))
    assert len(rejection.event_reasons) == MAX_LISTED_EVENTS
    # the record was applied: its events are judged, the volume's rejected counts them all
    assert state_of(outcome) is not None and state_of(outcome).rejected == n


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
    """What rejects a record whole before any state is read (was batch_error)."""
    outcome = Table().apply(encode(record), placement=Placement(record["volume_id"].encode(),
                                                                0, 1))
    if error is None:
        assert not outcome.rejections and outcome.counted == 1
    else:
        [rejection] = outcome.rejections
        assert rejection.whole and error in rejection.reason and not outcome.volumes
