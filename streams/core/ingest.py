"""From one raw Kafka record to a volume's new state and its rejections.

Pure logic: no faust, no aiokafka. The accounting agent calls
:func:`account_record` once per record (one state update per volume per
record, DESIGN.md decision 2) and publishes what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.core.batch import EventBatch
from streams.core.codec import CodecError, SchemaSet
from streams.core.counters import VolumeState
from streams.core.events import (
    DEFAULT_FUTURE_TOLERANCE_NS,
    DEFAULT_RETENTION_NS,
    OPS,
    STATUSES,
    event_error,
    id_error,
)

COLUMNS = ("op", "status", "offset", "bytes", "submit_ns", "complete_ns")


@dataclass(frozen=True, slots=True)
class Limits:
    """The time horizons of SEMANTICS.md section 4 (settings)."""

    retention_ns: int = DEFAULT_RETENTION_NS
    future_tolerance_ns: int = DEFAULT_FUTURE_TOLERANCE_NS


@dataclass(slots=True)
class Rejection:
    """What goes to the dead-letter topic: the reason and what it covers."""

    reason: str
    events: int
    batch: dict[str, Any] | None = None
    event_index: int | None = None
    event_json: str | None = None
    payload: bytes | None = None


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


def batch_error(batch: dict[str, Any], known: VolumeState | None = None) -> str | None:
    """Why a decoded batch cannot be counted at all, or None (``known``: its volume's state)."""
    lengths = {name: len(batch[name]) for name in COLUMNS}
    if len(set(lengths.values())) != 1:
        return "columns of unequal length: " + ", ".join(f"{k}={v}" for k, v in lengths.items())
    reason = id_error("volume_id", batch["volume_id"]) or id_error("tenant_id", batch["tenant_id"])
    if reason is None and known is not None and known.tenant_id != batch["tenant_id"]:
        # Never bill one tenant's I/O to another: the first tenant seen owns the volume.
        reason = (f"volume {batch['volume_id']} belongs to tenant {known.tenant_id}, "
                  f"not {batch['tenant_id']}")
    return reason


def _reject_whole(
    batch: dict[str, Any], payload: bytes, reason: str, known: VolumeState | None,
) -> RecordOutcome:
    """Reject a whole record; a volume already known counts it in its ``rejected``."""
    n_events = len(batch["op"])
    rejection = Rejection(reason, n_events, batch, payload=payload)
    if known is None:
        return RecordOutcome(rejections=[rejection])
    known.rejected += n_events
    known.mark_applied(batch["producer_id"], batch["seq"])  # a replay of it is skipped too
    return RecordOutcome(batch["volume_id"], known, rejections=[rejection])


def _validate_events(
    batch: dict[str, Any], now_ns: int, limits: Limits,
) -> tuple[list[int], list[Rejection]]:
    good: list[int] = []
    rejections: list[Rejection] = []
    columns = [batch[name] for name in COLUMNS]
    for i, (op, status, offset, nbytes, submit_ns, complete_ns) in enumerate(
        zip(*columns, strict=True)
    ):
        reason = event_error(op, status, offset, nbytes, submit_ns, complete_ns, now_ns,
                             limits.retention_ns, limits.future_tolerance_ns)
        if reason is None:
            good.append(i)
        else:
            rejections.append(Rejection(reason, 1, batch, i, event_json(batch, i)))
    return good, rejections


def account_record(
    payload: bytes, load_state: Callable[[str], VolumeState | None], schemas: SchemaSet,
    now_ns: int, limits: Limits = Limits(),
) -> RecordOutcome:
    """Decode, validate and count one raw record against its volume's state."""
    try:
        _, batch = schemas.decode(payload, expect="IoBatch")
    except CodecError as exc:
        return RecordOutcome(rejections=[Rejection(str(exc), 0, payload=payload)])
    volume_id = batch["volume_id"]
    known = load_state(volume_id) if id_error("volume_id", volume_id) is None else None
    if known is not None and known.is_replay(batch["producer_id"], batch["seq"]):
        # Counted already. The windows keep their own record of what they applied (after
        # a crash one table's change can have landed without the other's), so a replay
        # still carries the batch and its valid events for them to judge; nothing here
        # counts it again.
        if batch_error(batch, known) is not None:
            return RecordOutcome(volume_id, None, replay=True)
        good, _ = _validate_events(batch, now_ns, limits)
        return RecordOutcome(volume_id, None, replay=True,
                             events=EventBatch.from_record(batch, good),
                             producer=(batch["producer_id"], batch["seq"]))
    reason = batch_error(batch, known)
    if reason is not None:
        return _reject_whole(batch, payload, reason, known)
    state = known or VolumeState(batch["tenant_id"])
    state.mark_applied(batch["producer_id"], batch["seq"])
    good, rejections = _validate_events(batch, now_ns, limits)
    events = EventBatch.from_record(batch, good)
    state.add_events(events)
    state.rejected += len(rejections)
    return RecordOutcome(volume_id, state, len(good), rejections=rejections, events=events,
                         producer=(batch["producer_id"], batch["seq"]))


def dead_letter_record(
    rejection: Rejection, source_topic: str, partition: int, offset: int, now_ns: int,
) -> dict[str, Any]:
    """The DeadLetter Avro record for one rejection."""
    batch = rejection.batch or {}
    return {
        "reason": rejection.reason, "source_topic": source_topic,
        "source_partition": partition, "source_offset": offset,
        "rejected_at_ns": now_ns, "events": rejection.events,
        "volume_id": batch.get("volume_id"), "tenant_id": batch.get("tenant_id"),
        "producer_id": batch.get("producer_id"), "seq": batch.get("seq"),
        "event_index": rejection.event_index, "event_json": rejection.event_json,
        "payload": rejection.payload,
    }
