"""From one raw Kafka record to a volume's new state and its rejections.

Pure logic: no faust, no aiokafka. The accounting agent calls
:func:`account_record` once per record (one state update per volume per
record, DESIGN.md decision 2) and publishes what it returns. A record rejected
whole changes no state at all: no volume, no producer entry, no replay mark.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.core.batch import EventBatch
from streams.core.codec import CodecError, SchemaSet
from streams.core.counters import VolumeState, record_digest
from streams.core.events import (
    DEFAULT_FUTURE_TOLERANCE_NS,
    DEFAULT_RETENTION_NS,
    OPS,
    STATUSES,
    event_error,
    id_error,
)
from streams.core.partitioning import default_partition
from streams.core.registry import owner_error

COLUMNS = ("op", "status", "offset", "bytes", "submit_ns", "complete_ns")
DEFAULT_MAX_EVENTS_PER_RECORD = 100_000
# A dead letter's bounds: whatever the record, its dead letter stays far below any
# producer's size limit (a dead letter that cannot be sent would stop the agent).
PAYLOAD_PREFIX_BYTES = 4096
MAX_LISTED_EVENTS = 100  # bad events listed by index and reason; `events` counts them all
MAX_REASON_CHARS = 512
MAX_EVENT_REASON_CHARS = 200
MAX_ID_CHARS = 256
DEAD_LETTER_MAX_BYTES = 64 * 1024  # what the bounds above add up to, with room to spare


@dataclass(frozen=True, slots=True)
class Limits:
    """The time horizons of SEMANTICS.md section 4 and the events per record (settings)."""

    retention_ns: int = DEFAULT_RETENTION_NS
    future_tolerance_ns: int = DEFAULT_FUTURE_TOLERANCE_NS
    max_events_per_record: int = DEFAULT_MAX_EVENTS_PER_RECORD


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a raw record sits in Kafka: its key, its partition, the topic's partitions."""

    key: bytes | None
    partition: int
    partitions: int

    @classmethod
    def of(cls, volume_id: str, partitions: int) -> Placement:
        """Where a producer with Kafka's default partitioner puts a record of ``volume_id``."""
        key = volume_id.encode()
        return cls(key, default_partition(key, partitions), partitions)


@dataclass(slots=True)
class Rejection:
    """What goes to the dead-letter topic: the reason and what it covers. A whole record
    has no ``event_indexes``; an accepted record's bad events make one rejection, with
    the first :data:`MAX_LISTED_EVENTS` of them listed (``events`` counts them all)."""

    reason: str
    events: int
    batch: dict[str, Any] | None = None
    payload: bytes | None = None
    event_indexes: list[int] = field(default_factory=list)
    event_reasons: list[str] = field(default_factory=list)
    event_json: str | None = None  # the first bad event, canonical JSON

    @property
    def whole(self) -> bool:
        return not self.event_indexes


@dataclass(slots=True)
class RecordOutcome:
    """The result of one record: a state to store (or None) and rejections; its valid
    events (``events``, counted now or a replay) and their (producer_id, seq)."""

    volume_id: str | None = None
    state: VolumeState | None = None
    counted: int = 0
    replay: bool = False
    rejections: list[Rejection] = field(default_factory=list)
    events: EventBatch | None = None
    producer: tuple[str, int] | None = None


def event_json(batch: dict[str, Any], i: int) -> str:
    """Event ``i`` of a batch in the canonical JSON form (codes shown raw if unknown)."""
    op, status = batch["op"][i], batch["status"][i]
    obj = {
        "volume_id": batch["volume_id"], "tenant_id": batch["tenant_id"],
        "host_id": batch["host_id"],
        "op": OPS[op] if op < len(OPS) else op,
        "status": STATUSES[status] if status < len(STATUSES) else status,
        "offset": batch["offset"][i], "bytes": batch["bytes"][i],
        "submit_ns": batch["submit_ns"][i], "complete_ns": batch["complete_ns"][i],
    }
    return orjson.dumps(obj).decode()


def batch_error(batch: dict[str, Any], limits: Limits = Limits()) -> str | None:
    """Why a decoded batch cannot be counted at all, whatever the state, or None."""
    lengths = {name: len(batch[name]) for name in COLUMNS}
    if len(set(lengths.values())) != 1:
        return "columns of unequal length: " + ", ".join(f"{k}={v}" for k, v in lengths.items())
    reason = id_error("volume_id", batch["volume_id"]) or id_error("tenant_id", batch["tenant_id"])
    if reason is not None:
        return reason
    n_events = lengths["op"]
    if n_events == 0:
        # An empty record would claim the volume (and move a replay mark) before any I/O.
        return "empty batch: a record must carry at least one event"
    if n_events > limits.max_events_per_record:
        return (f"{n_events} events in one record, more than the limit of "
                f"{limits.max_events_per_record}")
    return None


def placement_error(volume_id: str, placement: Placement) -> str | None:
    """Why a record of ``volume_id`` does not belong where it sits, or None: a record
    elsewhere would count the volume in a second partition (two sets of counters)."""
    want = volume_id.encode()
    if placement.key != want:
        shown = "none" if placement.key is None else repr(placement.key[:MAX_ID_CHARS])
        return f"key {shown} is not the volume id {volume_id!r}"
    partition = default_partition(want, placement.partitions)
    if placement.partition != partition:
        return (f"partition {placement.partition} is not the default partition {partition} "
                f"of volume {volume_id} among {placement.partitions}")
    return None


def _reject_whole(batch: dict[str, Any], payload: bytes, reason: str) -> RecordOutcome:
    """Reject a whole record: nothing about it is remembered anywhere."""
    valid_id = id_error("volume_id", batch["volume_id"]) is None
    return RecordOutcome(batch["volume_id"] if valid_id else None, rejections=[
        Rejection(reason, len(batch["op"]), batch, payload=payload)])


def _validate_events(
    batch: dict[str, Any], payload: bytes, now_ns: int, limits: Limits,
) -> tuple[list[int], list[Rejection]]:
    """The indexes of the good events, and one rejection for all the bad ones (or none)."""
    good: list[int] = []
    bad = Rejection("", 0, batch, payload=payload)
    columns = [batch[name] for name in COLUMNS]
    for i, (op, status, offset, nbytes, submit_ns, complete_ns) in enumerate(
        zip(*columns, strict=True)
    ):
        reason = event_error(op, status, offset, nbytes, submit_ns, complete_ns, now_ns,
                             limits.retention_ns, limits.future_tolerance_ns)
        if reason is None:
            good.append(i)
            continue
        if bad.events < MAX_LISTED_EVENTS:
            bad.event_indexes.append(i)
            bad.event_reasons.append(reason)
        bad.events += 1
    if not bad.events:
        return good, []
    first = bad.event_indexes[0]
    bad.event_json = event_json(batch, first)
    bad.reason = (f"{bad.events} of {len(good) + bad.events} event(s) rejected; event "
                  f"{first}: {bad.event_reasons[0]}")
    return good, [bad]


def account_record(
    payload: bytes, placement: Placement, load_state: Callable[[str], VolumeState | None],
    schemas: SchemaSet, now_ns: int, limits: Limits = Limits(),
    registered: Callable[[str], str | None] | None = None,
) -> RecordOutcome:
    """Decode, validate and count one raw record (sitting at ``placement``) against its
    volume's state. ``registered`` is the volume registry's lookup (volume_id -> tenant or
    None; it may raise :class:`~streams.core.registry.RegistryBehind`, before any state is
    changed); None: no registry is deployed, the first tenant seen owns a volume."""
    try:
        _, batch = schemas.decode(payload, expect="IoBatch")
    except CodecError as exc:
        return RecordOutcome(rejections=[Rejection(str(exc), 0, payload=payload)])
    volume_id = batch["volume_id"]
    reason = batch_error(batch, limits) or placement_error(volume_id, placement)
    known = load_state(volume_id) if reason is None else None
    if reason is None:
        reason = owner_error(volume_id, batch["tenant_id"],
                             None if registered is None else registered(volume_id),
                             registered is not None, None if known is None else known.tenant_id)
    if reason is not None:
        return _reject_whole(batch, payload, reason)
    producer_id, seq = batch["producer_id"], batch["seq"]
    digest = record_digest(payload)
    if known is not None and known.conflicts(producer_id, seq, digest):
        return _reject_whole(batch, payload, f"seq {seq} of producer {producer_id} was "
                                             "applied with other content")
    if known is not None and known.is_replay(producer_id, seq):
        # Counted already. The windows keep their own record of what they applied (after
        # a crash one table's change can have landed without the other's), so a replay
        # still carries the batch and its valid events for them to judge; nothing here
        # counts it again.
        good, _ = _validate_events(batch, payload, now_ns, limits)
        return RecordOutcome(volume_id, None, replay=True,
                             events=EventBatch.from_record(batch, good),
                             producer=(producer_id, seq))
    state = known or VolumeState(batch["tenant_id"])
    state.mark_applied(producer_id, seq, digest)
    good, rejections = _validate_events(batch, payload, now_ns, limits)
    events = EventBatch.from_record(batch, good)
    state.add_events(events)
    state.rejected += sum(r.events for r in rejections)
    return RecordOutcome(volume_id, state, len(good), rejections=rejections, events=events,
                         producer=(producer_id, seq))


def clip_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text) - limit} more characters)"


def _clip_str(value: Any, limit: int) -> str | None:
    """``value`` clipped, if it is a string at all (a decoded batch's may be anything)."""
    return clip_text(value, limit) if isinstance(value, str) else None


def bounded_payload(payload: bytes | None) -> dict[str, Any]:
    """A dead letter's view of the original value: a bounded prefix, its length and
    SHA-256 (never the whole: a record near the size limit would make a dead letter
    larger than may be sent)."""
    if payload is None:
        return {"payload": None, "payload_length": None, "payload_sha256": None}
    return {"payload": payload[:PAYLOAD_PREFIX_BYTES], "payload_length": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest()}


def dead_letter_record(
    rejection: Rejection, source_topic: str, partition: int, offset: int, now_ns: int,
) -> dict[str, Any]:
    """The DeadLetter Avro record for one rejection, bounded in size whatever the input
    (at most :data:`DEAD_LETTER_MAX_BYTES` encoded)."""
    batch = rejection.batch or {}
    seq = batch.get("seq")
    indexes = rejection.event_indexes[:MAX_LISTED_EVENTS]
    return {
        "reason": clip_text(rejection.reason, MAX_REASON_CHARS),
        "source_topic": clip_text(source_topic, MAX_ID_CHARS),
        "source_partition": partition, "source_offset": offset,
        "rejected_at_ns": now_ns, "events": rejection.events,
        "volume_id": _clip_str(batch.get("volume_id"), MAX_ID_CHARS),
        "tenant_id": _clip_str(batch.get("tenant_id"), MAX_ID_CHARS),
        "producer_id": _clip_str(batch.get("producer_id"), MAX_ID_CHARS),
        "seq": seq if isinstance(seq, int) else None,
        "event_index": indexes[0] if indexes else None,
        "event_json": _clip_str(rejection.event_json, PAYLOAD_PREFIX_BYTES),
        "event_indexes": indexes,
        "event_reasons": [clip_text(r, MAX_EVENT_REASON_CHARS) for r in
                          rejection.event_reasons[:MAX_LISTED_EVENTS]],
        **bounded_payload(rejection.payload),
    }

