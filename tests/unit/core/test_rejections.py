"""Records rejected whole change no state at all; misplaced records, conflicting replays
and empty or oversized batches are among them; every dead letter is bounded."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.counters import VolumeState
from streams.core.ingest import (
    DEAD_LETTER_MAX_BYTES,
    PAYLOAD_PREFIX_BYTES,
    Limits,
    Placement,
    account_record,
    dead_letter_record,
)
from tests.unit.core.ingest_records import (
    NOW,
    PARTITIONS,
    SCHEMAS,
    Table,
    batch,
    encode,
    ev,
    placed,
    state_of,
)

seeds = st.integers(0, 2**32)


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
    assert state_of(outcome) is None and outcome.counted == 0 and not outcome.replays
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
        "rejected_at_ns": 0, "events": 0}), "expected a IoBatch or IoBatch2 record, got DeadLetter",
        id="a record of the wrong type"),
])
def test_an_undecodable_record_is_rejected_whole(payload: bytes, words: str) -> None:
    outcome = Table().apply(payload)
    assert state_of(outcome) is None and not outcome.volumes
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
    assert state_of(outcome) is None and table.snapshots == before  # byte-identical
    after = table.apply(encode(batch([ev()], "p-1", 1)))  # the producer's next good record
    assert after.counted == 1 and not after.replays
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
    assert len(outcome.rejections) == 1 and outcome.counted == 0 and state_of(outcome) is None
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
    assert state_of(outcome) is None and outcome.counted == 0 and table.snapshots == before
    assert not outcome.volumes  # the windows do not see it either
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
    assert state_of(outcome) is None and not outcome.replays and not outcome.volumes
    assert table.snapshots == before
    again = table.apply(applied)  # the record that was applied, again: a plain replay
    assert again.replays and not again.rejections and table.snapshots == before


def test_a_lower_seq_with_other_content_cannot_be_checked() -> None:
    """Only the last applied record's digest is kept (README: Rejections)."""
    table = Table()
    table.apply(encode(batch([ev()], "p-1", 7)))
    table.apply(encode(batch([ev()], "p-1", 8)))
    outcome = table.apply(encode(batch([ev(nbytes=8192)], "p-1", 7)))
    assert outcome.replays and not outcome.rejections and outcome.counted == 0


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
        assert state_of(outcome) is None and outcome.counted == 0 and not outcome.volumes
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
