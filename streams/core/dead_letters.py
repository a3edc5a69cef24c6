"""Dead letters: what a rejection says, and its DeadLetter record, bounded whatever the input.

Pure logic: no faust, no aiokafka. :func:`streams.core.ingest.account_record` makes at
most one :class:`Rejection` per raw record; the agent publishes it with
:func:`dead_letter_record` keyed by :func:`dead_letter_key`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.core.events import OPS, STATUSES, id_error
from streams.core.raw import RawBatch

# A dead letter's bounds: whatever the record, its dead letter stays far below any
# producer's size limit (a dead letter that cannot be sent would stop the agent).
PAYLOAD_PREFIX_BYTES = 4096
MAX_LISTED_EVENTS = 100  # bad events listed by index and reason; `events` counts them all
MAX_REASON_CHARS = 512
MAX_EVENT_REASON_CHARS = 200
MAX_ID_CHARS = 256
DEAD_LETTER_MAX_BYTES = 64 * 1024  # what the bounds above add up to, with room to spare


@dataclass(slots=True)
class Rejection:
    """What goes to the dead-letter topic: the reason and what it covers. A whole record
    has no ``event_indexes``; else the record's rejected events (of rejected volumes and
    bad events) make one rejection, the first :data:`MAX_LISTED_EVENTS` of them listed by
    record-level index (``events`` counts them all). ``volume_id``/``tenant_id``: the
    volume it names (the first listed event's; a whole record's first volume)."""

    reason: str
    events: int
    batch: dict[str, Any] | None = None
    payload: bytes | None = None
    event_indexes: list[int] = field(default_factory=list)
    event_reasons: list[str] = field(default_factory=list)
    event_json: str | None = None  # the first bad event, canonical JSON
    volume_id: str | None = None
    tenant_id: str | None = None

    @property
    def whole(self) -> bool:
        return not self.event_indexes



def _canonical_json(volume_id: Any, tenant_id: Any, host_id: Any, op: int, status: int,
                    offset: int, nbytes: int, submit_ns: int, complete_ns: int) -> str:
    obj = {
        "volume_id": volume_id, "tenant_id": tenant_id, "host_id": host_id,
        "op": OPS[op] if op < len(OPS) else op,
        "status": STATUSES[status] if status < len(STATUSES) else status,
        "offset": offset, "bytes": nbytes, "submit_ns": submit_ns, "complete_ns": complete_ns,
    }
    return orjson.dumps(obj).decode()


def event_json(batch: Mapping[str, Any], i: int) -> str:
    """Event ``i`` of a layout 1 record in the canonical JSON form (codes shown raw if
    unknown)."""
    return _canonical_json(batch["volume_id"], batch["tenant_id"], batch["host_id"],
                           batch["op"][i], batch["status"][i], batch["offset"][i],
                           batch["bytes"][i], batch["submit_ns"][i], batch["complete_ns"][i])


def raw_event_json(raw: RawBatch, i: int) -> str:
    """Event ``i`` of a record of either layout, as :func:`event_json`."""
    c, v = raw.columns, int(raw.columns.volume[i])
    return _canonical_json(c.volumes[v], c.tenants[v], raw.host_id, int(c.op[i]),
                           int(c.status[i]), int(raw.offset[i]), int(c.nbytes[i]),
                           int(c.submit_ns[i]), int(c.complete_ns[i]))



def dead_letter_key(rejection: Rejection) -> bytes | None:
    """The dead letter's Kafka key: the volume it names, when that is a valid id."""
    volume_id = rejection.volume_id
    if volume_id is None or id_error("volume_id", volume_id) is not None:
        return None
    return volume_id.encode()


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


def _or(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


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
        "volume_id": _clip_str(_or(rejection.volume_id, batch.get("volume_id")), MAX_ID_CHARS),
        "tenant_id": _clip_str(_or(rejection.tenant_id, batch.get("tenant_id")), MAX_ID_CHARS),
        "producer_id": _clip_str(batch.get("producer_id"), MAX_ID_CHARS),
        "seq": seq if isinstance(seq, int) else None,
        "event_index": indexes[0] if indexes else None,
        "event_json": _clip_str(rejection.event_json, PAYLOAD_PREFIX_BYTES),
        "event_indexes": indexes,
        "event_reasons": [clip_text(r, MAX_EVENT_REASON_CHARS) for r in
                          rejection.event_reasons[:MAX_LISTED_EVENTS]],
        **bounded_payload(rejection.payload),
    }

