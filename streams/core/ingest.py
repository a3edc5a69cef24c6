"""From one raw Kafka record (layout 1 or 2) to its volumes' new states and one rejection.

Pure logic: no faust, no aiokafka. The accounting agent calls :func:`account_record`
once per record (one state update per volume per record, DESIGN.md decision 2) and
publishes what it returns. Rules are judged at three levels: the record (undecodable,
bad layout, no events, too many, a key or partition not its own: rejected whole), each
volume (ids, placement, owner, conflict: that volume's events rejected, the others
counted; replay: skipped) and each event (vectorised). A rejected record or volume
changes no state at all: no volume, no producer entry, no replay mark. A record makes
at most one dead letter, whatever it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from streams.core.batch import Columns, EventBatch
from streams.core.codec import HEADER_LEN, CodecError, SchemaSet
from streams.core.counters import (
    COUNTER_NAMES,
    N_SLOTS,
    VolumeState,
    latency_bin_counts,
    latest_complete,
    record_digest,
    slot_sums,
)
from streams.core.dead_letters import (
    DEAD_LETTER_MAX_BYTES,
    MAX_EVENT_REASON_CHARS,
    MAX_ID_CHARS,
    MAX_LISTED_EVENTS,
    MAX_REASON_CHARS,
    PAYLOAD_PREFIX_BYTES,
    Rejection,
    bounded_payload,
    clip_text,
    dead_letter_key,
    dead_letter_record,
    event_json,
    raw_event_json,
)
from streams.core.events import (
    DEFAULT_FUTURE_TOLERANCE_NS,
    DEFAULT_RETENTION_NS,
    INT64_MAX,
    bad_event_mask,
    event_error,
    id_error,
)
from streams.core.partitioning import default_partition, default_partitions
from streams.core.raw import RAW_RECORD_NAMES, RawBatch, RawLayoutError, raw_batch
from streams.core.registry import owner_error

__all__ = [  # and, re-exported, the dead-letter names callers knew here
    "DEAD_LETTER_MAX_BYTES", "MAX_EVENT_REASON_CHARS", "MAX_LISTED_EVENTS", "MAX_REASON_CHARS",
    "PAYLOAD_PREFIX_BYTES", "Limits", "Placement", "RecordOutcome", "Rejection",
    "VolumeOutcome", "account_record", "bounded_payload", "clip_text", "dead_letter_key",
    "dead_letter_record", "decode_raw", "event_json", "judge_decoded", "judge_whole",
    "key_error", "legacy_event_batch", "owner_error", "placement_error", "record_error",
    "any_misplaced",
]
DEFAULT_MAX_EVENTS_PER_RECORD = 100_000


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
class VolumeOutcome:
    """One accepted volume of a record: the state to store (None for a replay: nothing
    changed), its valid events as one volume's Columns (counted now, or a replay's, for
    the windows to judge against their own marks) and the (producer_id, seq) to mark."""

    volume_id: str
    tenant_id: str
    state: VolumeState | None
    counted: int
    replay: bool
    producer: tuple[str, int]
    events: Columns


@dataclass(slots=True)
class RecordOutcome:
    """The result of one record: its accepted volumes, in volume-table order, and its one
    rejection, if any."""

    volumes: list[VolumeOutcome] = field(default_factory=list)
    rejection: Rejection | None = None

    @property
    def counted(self) -> int:
        return sum(v.counted for v in self.volumes)

    @property
    def replays(self) -> int:
        """Volumes skipped as replays."""
        return sum(v.replay for v in self.volumes)

    @property
    def rejections(self) -> list[Rejection]:
        return [] if self.rejection is None else [self.rejection]


def legacy_event_batch(volume: VolumeOutcome) -> EventBatch:
    """ADAPTER, to delete once the windows take Columns: a volume's valid events as the
    EventBatch the scalar windows, billing and audit take, of plain Python ints (numpy
    int64 arithmetic there could overflow silently)."""
    events = volume.events
    return EventBatch(volume.volume_id, volume.tenant_id, events.op.tobytes(),
                      events.status.tobytes(), events.nbytes.tolist(),
                      events.submit_ns.tolist(), events.complete_ns.tolist(),
                      range(len(events)))


# Volumes whose default partition the record-by-record path keeps (murmur2 in Python,
# ~2.3 µs a key; a step judged at once takes all of its volumes in one numpy pass instead:
# core/step.py). Bounded well below a worker's volumes: an entry costs ~250 B with its key,
# which (f) counts per volume (65,536 of them and as many id checks were ~250 B a volume
# at 100,000 volumes: docs/performance.md, session 21).
PARTITIONS_CACHED = 1 << 12


def _placed_in(volume_id: str, partitions: int) -> int:
    """The default partition of ``volume_id`` (cached: volumes recur in every record; only
    short ids, so a hostile record's long ones cannot fill memory)."""
    if len(volume_id) <= MAX_ID_CHARS:
        return _cached_partition(volume_id, partitions)
    return default_partition(volume_id.encode(), partitions)


@lru_cache(maxsize=PARTITIONS_CACHED)
def _cached_partition(volume_id: str, partitions: int) -> int:
    return default_partition(volume_id.encode(), partitions)


def _id_errors(volume_id: str, tenant_id: str) -> str | None:
    """Why the ids are not valid, or None (~0.35 µs: no cache, it would cost more memory
    than it saves time)."""
    return id_error("volume_id", volume_id) or id_error("tenant_id", tenant_id)


def any_misplaced(volume_ids: Sequence[str], placement: Placement) -> bool:
    """Whether any of ``volume_ids`` does not belong in the partition a record sits in
    (:func:`placement_error` of each, in one pass; the reason is the record-by-record
    path's to give)."""
    placed = default_partitions([v.encode() for v in volume_ids], placement.partitions)
    return bool((placed != placement.partition).any())


def _shown_id(volume_id: str) -> str:
    return repr(clip_text(volume_id, 64))


def key_error(first: str, layout: int, placement: Placement) -> str | None:
    """Why the record's key does not fit it (layout 1: the volume id ``first``; layout 2:
    the first volume's id ``first``, as the SDK sends) or places it elsewhere, or None."""
    if placement.key != first.encode():
        shown = "none" if placement.key is None else repr(placement.key[:MAX_ID_CHARS])
        what = "the volume id" if layout == 1 else "the first volume's id"
        return f"key {shown} is not {what} {_shown_id(first)}"
    return placement_error(first, placement)


def placement_error(volume_id: str, placement: Placement) -> str | None:
    """Why ``volume_id`` does not belong in the partition a record sits in, or None:
    counted elsewhere, it would have a second set of counters."""
    partition = _placed_in(volume_id, placement.partitions)
    if placement.partition != partition:
        return (f"partition {placement.partition} is not the default partition {partition} "
                f"of volume {clip_text(volume_id, 64)} among {placement.partitions}")
    return None


COUNTED, REPLAY, REJECTED = 0, 1, 2  # what becomes of a volume of the record


@dataclass(slots=True)
class _Verdict:
    fate: int
    known: VolumeState | None = None
    reason: str | None = None


def _judge_volume(raw: RawBatch, v: int, placement: Placement, digest: str,
                  load_state: Callable[[str], VolumeState | None],
                  registered: Callable[[str], str | None] | None) -> _Verdict:
    """The per-volume rules, in order: ids, placement, owner (core/registry.py), conflict,
    replay."""
    volume_id, tenant_id = raw.columns.volumes[v], raw.columns.tenants[v]
    reason = _id_errors(volume_id, tenant_id) or placement_error(volume_id, placement)
    if reason is not None:
        return _Verdict(REJECTED, reason=reason)
    known = load_state(volume_id)
    reason = owner_error(volume_id, tenant_id,
                         None if registered is None else registered(volume_id),
                         registered is not None, None if known is None else known.tenant_id)
    if reason is None and known is not None and known.conflicts(raw.producer_id, raw.seq,
                                                                digest):
        reason = f"seq {raw.seq} of producer {raw.producer_id} was applied with other content"
    if reason is not None:
        return _Verdict(REJECTED, reason=reason)
    if known is not None and known.is_replay(raw.producer_id, raw.seq):
        return _Verdict(REPLAY, known)
    return _Verdict(COUNTED, known)


def decode_raw(payload: bytes, schemas: SchemaSet) -> tuple[str, dict[str, Any]]:
    """A raw record of either layout (its name, the record); raises CodecError."""
    known = schemas.writers.get(payload[2:HEADER_LEN])
    expect = known[0] if known is not None and known[0] in RAW_RECORD_NAMES else None
    return schemas.decode(payload, expect=expect or " or ".join(RAW_RECORD_NAMES))


def _named(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The volume a whole record's dead letter names: layout 1's, layout 2's first."""
    if "volumes" not in record:
        return record["volume_id"], record["tenant_id"]
    first = record["volumes"][0] if record["volumes"] else {}
    return first.get("volume_id"), first.get("tenant_id")


def _reject_whole(record: dict[str, Any], payload: bytes, reason: str,
                  named: tuple[str | None, str | None] | None = None) -> RecordOutcome:
    """Reject a whole record: nothing about it is remembered anywhere."""
    volume_id, tenant_id = named or _named(record)
    return RecordOutcome(rejection=Rejection(reason, len(record["op"]), record, payload,
                                             volume_id=volume_id, tenant_id=tenant_id))


def record_error(layout: int, volumes: Sequence[str], tenants: Sequence[str], n_events: int,
                 placement: Placement, limits: Limits) -> str | None:
    """The record-level rules past its layout (the ids of layout 1's one volume, its
    number of events, its key and placement): why the whole record is rejected, or None."""
    if layout == 1:  # one volume: its ids judged first, as before layout 2 (same reasons)
        reason = _id_errors(volumes[0], tenants[0])
        if reason is not None:
            return reason
    if n_events == 0:
        # An empty record would claim the volume (and move a replay mark) before any I/O.
        return "empty batch: a record must carry at least one event"
    if n_events > limits.max_events_per_record:
        return (f"{n_events} events in one record, more than the limit of "
                f"{limits.max_events_per_record}")
    return key_error(volumes[0], layout, placement)


def judge_whole(payload: bytes, placement: Placement, schemas: SchemaSet, limits: Limits
                ) -> tuple[dict[str, Any], RawBatch] | RecordOutcome:
    """The record-level rules, which depend on no state: the decoded record and its
    columns, or the whole record's rejection."""
    try:
        name, record = decode_raw(payload, schemas)
    except CodecError as exc:
        return RecordOutcome(rejection=Rejection(str(exc), 0, payload=payload))
    return judge_decoded(name, record, payload, placement, limits)


def judge_decoded(name: str, record: dict[str, Any], payload: bytes, placement: Placement,
                  limits: Limits) -> tuple[dict[str, Any], RawBatch] | RecordOutcome:
    """:func:`judge_whole` of a record decoded already (``name``: its schema's)."""
    try:
        raw = raw_batch(name, record)
    except RawLayoutError as exc:
        return _reject_whole(record, payload, str(exc))
    cols = raw.columns
    reason = record_error(raw.layout, cols.volumes, cols.tenants, len(raw), placement, limits)
    if reason is not None:
        return _reject_whole(record, payload, reason)
    return record, raw


def account_record(
    payload: bytes, placement: Placement, load_state: Callable[[str], VolumeState | None],
    schemas: SchemaSet, now_ns: int, limits: Limits = Limits(),
    registered: Callable[[str], str | None] | None = None,
) -> RecordOutcome:
    """Decode, validate and count one raw record of either layout (sitting at
    ``placement``) against its volumes' states. ``registered`` is the volume registry's
    lookup (volume_id -> tenant or None; it may raise
    :class:`~streams.core.registry.RegistryBehind`, which happens before any state is
    changed: every volume is judged first); None: no registry is deployed, the first
    tenant seen owns a volume."""
    whole = judge_whole(payload, placement, schemas, limits)
    if isinstance(whole, RecordOutcome):
        return whole
    record, raw = whole
    cols = raw.columns
    per_volume = np.bincount(cols.volume, minlength=len(cols.volumes)).tolist()
    digest = record_digest(payload)
    verdicts = [_judge_volume(raw, v, placement, digest, load_state, registered) if n else None
                for v, n in enumerate(per_volume)]
    judged = [(v, j) for v, j in enumerate(verdicts) if j is not None]
    if all(j.fate == REJECTED for _, j in judged):
        return _reject_whole(record, payload, _all_rejected(raw, judged),
                             (cols.volumes[judged[0][0]], cols.tenants[judged[0][0]]))
    fates = np.array([REJECTED if j is None else j.fate for j in verdicts], dtype=np.int8)
    return _accept(record, payload, raw, verdicts, fates[cols.volume], digest, now_ns, limits)


def _all_rejected(raw: RawBatch, judged: list[tuple[int, _Verdict]]) -> str:
    v, verdict = judged[0]
    if len(judged) == 1:
        return verdict.reason or ""
    return (f"all {len(judged)} volumes rejected; volume "
            f"{_shown_id(raw.columns.volumes[v])}: {verdict.reason}")


def _accept(record: dict[str, Any], payload: bytes, raw: RawBatch,
            verdicts: list[_Verdict | None], fate: np.ndarray, digest: str, now_ns: int,
            limits: Limits) -> RecordOutcome:
    """Count the events of the COUNTED volumes, carry the REPLAY volumes' valid events,
    and make one rejection of REJECTED volumes' events and COUNTED volumes' bad ones."""
    cols = raw.columns
    bad = bad_event_mask(cols.op, cols.status, raw.offset, cols.nbytes, cols.submit_ns,
                         cols.complete_ns, now_ns, limits.retention_ns,
                         limits.future_tolerance_ns)
    counted = ~bad & (fate == COUNTED)
    rejected = (fate == REJECTED) | (bad & (fate == COUNTED))
    take = cols.take(counted)
    sums, latest = slot_sums(take), latest_complete(take)
    overflowing = _overflowing(verdicts, sums)
    if overflowing:  # those volumes' events are rejected; the others judged again
        for v, reason in overflowing.items():
            verdicts[v] = _Verdict(REJECTED, reason=reason)
        judged = [(v, j) for v, j in enumerate(verdicts) if j is not None]
        if all(j.fate == REJECTED for _, j in judged):
            return _reject_whole(record, payload, _all_rejected(raw, judged),
                                 (cols.volumes[judged[0][0]], cols.tenants[judged[0][0]]))
        fates = np.array([REJECTED if j is None else j.fate for j in verdicts], np.int8)
        return _accept(record, payload, raw, verdicts, fates[cols.volume], digest, now_ns,
                       limits)
    bad_of = np.bincount(cols.volume[bad & (fate == COUNTED)],
                         minlength=len(cols.volumes)).tolist()
    valid = _by_volume(cols, ~bad & (fate != REJECTED))
    bins = latency_bin_counts(take)
    producer = (raw.producer_id, raw.seq)
    outcome = RecordOutcome(rejection=_rejection(record, payload, raw, verdicts, rejected,
                                                 now_ns, limits))
    for v, verdict in enumerate(verdicts):
        if verdict is None or verdict.fate == REJECTED:
            continue
        state = None
        if verdict.fate == COUNTED:
            state = verdict.known or VolumeState(cols.tenants[v])
            state.mark_applied(raw.producer_id, raw.seq, digest)
            state.add_sums(sums[v], latest[v], bins[v])
            state.rejected += bad_of[v]
        events = valid[v]
        outcome.volumes.append(VolumeOutcome(
            cols.volumes[v], cols.tenants[v], state,
            len(events) if verdict.fate == COUNTED else 0, verdict.fate == REPLAY,
            producer, events))
    return outcome


def _overflowing(verdicts: list[_Verdict | None], sums: list[list[int]]) -> dict[int, str]:
    """The COUNTED volumes whose counters these events would take past int64, the range of
    every output (Avro long, the table's encoding), each with its reason: counted, they
    would stop the worker on every retry; billing hours and windows hold subsets of the
    same events, so bounding the cumulative counters bounds them too."""
    out: dict[int, str] = {}
    for v, verdict in enumerate(verdicts):
        if verdict is None or verdict.fate != COUNTED:
            continue
        base = verdict.known.counters if verdict.known is not None else [0] * N_SLOTS
        for name, slot in COUNTER_NAMES:
            if base[slot] + sums[v][slot] > INT64_MAX:
                out[v] = (f"counting these events would take {name} past {INT64_MAX}, the "
                          "int64 range of every output")
                break
    return out


def _by_volume(cols: Columns, which: np.ndarray) -> list[Columns]:
    """The events at ``which``, split into one single-volume Columns per volume of the
    table (in record order within each)."""
    index = np.flatnonzero(which)
    volume = cols.volume[index]
    if len(cols.volumes) <= 1 << 16:
        volume = volume.astype(np.uint16)  # a stable sort of 16-bit keys is a radix sort
    index = index[np.argsort(volume, kind="stable")]
    bounds = np.searchsorted(cols.volume[index], np.arange(len(cols.volumes) + 1)).tolist()
    zeros = np.zeros(len(index), dtype=np.intp)
    op, status, nbytes = cols.op[index], cols.status[index], cols.nbytes[index]
    submit_ns, complete_ns = cols.submit_ns[index], cols.complete_ns[index]
    parts = []  # slices of the sorted columns: views, no copy per volume
    for v, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        parts.append(Columns((cols.volumes[v],), (cols.tenants[v],), zeros[lo:hi], op[lo:hi],
                             status[lo:hi], nbytes[lo:hi], submit_ns[lo:hi],
                             complete_ns[lo:hi]))
    return parts


def _rejection(record: dict[str, Any], payload: bytes, raw: RawBatch,
               verdicts: list[_Verdict | None], rejected: np.ndarray, now_ns: int,
               limits: Limits) -> Rejection | None:
    """The one rejection of an accepted record's rejected events, or None."""
    n_rejected = int(np.count_nonzero(rejected))
    if not n_rejected:
        return None
    cols = raw.columns
    listed = np.flatnonzero(rejected)[:MAX_LISTED_EVENTS].tolist()
    reasons = [_event_reason(raw, verdicts, i, now_ns, limits) for i in listed]
    first_volume = int(cols.volume[listed[0]])
    reason = f"{n_rejected} of {len(raw)} event(s) rejected"
    bad_volumes = [v for v, j in enumerate(verdicts) if j is not None and j.fate == REJECTED]
    if bad_volumes:
        v = bad_volumes[0]
        reason += (f"; {len(bad_volumes)} volume(s) rejected, first "
                   f"{_shown_id(cols.volumes[v])}: {verdicts[v].reason}")  # type: ignore[union-attr]
    reason += f"; event {listed[0]}: {reasons[0]}"
    return Rejection(reason, n_rejected, record, payload, listed, reasons,
                     raw_event_json(raw, listed[0]), cols.volumes[first_volume],
                     cols.tenants[first_volume])


def _event_reason(raw: RawBatch, verdicts: list[_Verdict | None], i: int, now_ns: int,
                  limits: Limits) -> str:
    """Why event ``i`` was rejected: its volume's reason, else the scalar rule's."""
    c = raw.columns
    v = int(c.volume[i])
    verdict = verdicts[v]
    if verdict is not None and verdict.fate == REJECTED:
        return f"volume {_shown_id(c.volumes[v])}: {verdict.reason}"
    reason = event_error(int(c.op[i]), int(c.status[i]), int(raw.offset[i]), int(c.nbytes[i]),
                         int(c.submit_ns[i]), int(c.complete_ns[i]), now_ns,
                         limits.retention_ns, limits.future_tolerance_ns)
    return reason or ""
