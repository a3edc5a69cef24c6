"""Per-partition batching of raw events: one IoBatch2 record per raw-topic partition
per flush (raw record layout 2, schemas/io_batch2.avsc).

Pure logic: no faust, no aiokafka. ``add`` only appends a row (the SDK's ``record()``
inlines the same append: bench (d)); ``take_ready`` takes every buffered event when
the buffer is full or its oldest event is ``max_age_ns`` old, groups the events by the
partition Kafka's default partitioner gives their volume, and hands out one record per
partition (more only when a record would be too large, or a volume changes tenant or a
partition changes host within one flush). Record keys are the first volume's id, so
the broker's own partitioner puts each record where its volumes belong. ``seq`` is
stamped in send order, so it grows per producer across all its records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.core.events import OP_CODE, STATUS_CODE, IoEvent
from streams.core.partitioning import default_partition
from streams.core.raw import EVENT_WIRE_BYTES, layout2_record

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
RECORD_OVERHEAD_BYTES = 96  # single-object header, producer/host ids' lengths, seq, 7 lengths
VOLUME_REF_OVERHEAD_BYTES = 10  # the two varint string lengths of a volume table entry
RECORD_BYTES_SHARE = 0.75  # of the raw topic's max.message.bytes: room for Kafka's framing


def record_bytes_bound(max_record_bytes: int) -> int:
    """The most bytes the SDK puts in one record: well under the raw topic's
    max.message.bytes (``IOACCT_MAX_RECORD_BYTES``), which bounds Kafka's batch with it."""
    return int(max_record_bytes * RECORD_BYTES_SHARE)


# One buffered event: (volume_id, tenant_id, op code, status code, offset, bytes,
# submit_ns, complete_ns, host_id): one tuple per event is the cheapest append.
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One IoBatch2 record to send: its Kafka key (the first volume's id), the record,
    its event count and the partition its volumes belong to (None: not known yet)."""

    key: bytes
    record: dict[str, Any]
    events: int
    partition: int | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A buffered event no record can carry (the caller dead-letters it), and why."""

    row: Row
    reason: str


def event_row(volume_id: str, tenant_id: str, op: str, status: str, offset: int,
              nbytes: int, submit_ns: int, complete_ns: int, host_id: str | None) -> Row:
    """The buffered form of one event; an unknown op or status raises ValueError (the
    layout has no place for it: the caller routes such input to the dead-letter topic)."""
    try:
        return (volume_id, tenant_id, OP_CODE[op], STATUS_CODE[status], offset, nbytes,
                submit_ns, complete_ns, host_id)
    except KeyError as exc:
        raise ValueError(f"unknown op or status {exc.args[0]!r}") from None


class PartitionBatcher:
    """Buffers events; hands out one IoBatch2 record per partition with (producer_id, seq).

    ``partitions`` None (the topic's count not known yet): every record holds one volume,
    which lands in its partition whatever the count. ``max_events`` bounds the buffer
    and so every record; ``max_record_bytes`` bounds a record's encoded size.
    """

    def __init__(self, producer_id: str, max_events: int, max_age_ns: int,
                 max_record_bytes: int, partitions: int | None = None) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.producer_id = producer_id
        self.max_events = max_events
        self.max_age_ns = max_age_ns
        self.max_record_bytes = max_record_bytes
        self.next_seq = 0
        self.rows: list[Row] = []  # the SDK appends here directly: keep the same list
        self.rejected: list[Rejected] = []  # taken by the caller after take_ready
        self._partitions = partitions
        self._partition_of: dict[str, int] = {}  # volume id -> partition, for _partitions
        self._opened_ns: int | None = None  # when the oldest buffered event arrived, at most
        self._last_take_ns: int | None = None

    @property
    def partitions(self) -> int | None:
        return self._partitions

    @partitions.setter
    def partitions(self, count: int | None) -> None:
        if count is not None and count < 1:
            raise ValueError("a topic has at least one partition")
        if count != self._partitions:
            self._partitions, self._partition_of = count, {}

    @property
    def buffered_events(self) -> int:
        return len(self.rows)

    def add(self, volume_id: str, tenant_id: str, op: str, status: str, offset: int,
            nbytes: int, submit_ns: int, complete_ns: int, host_id: str | None = None) -> bool:
        """Buffer one event; True when the buffer is full (take_ready now)."""
        rows = self.rows
        rows.append(event_row(volume_id, tenant_id, op, status, offset, nbytes, submit_ns,
                              complete_ns, host_id))
        return len(rows) >= self.max_events

    def add_event(self, event: IoEvent) -> bool:
        return self.add(event.volume_id, event.tenant_id, event.op, event.status,
                        event.offset, event.bytes, event.submit_ns, event.complete_ns,
                        event.host_id)

    def due(self, now_ns: int) -> bool:
        """The buffer is full or its oldest event is max_age old. An event's arrival is
        known to the caller's tick: the tick before it is taken as its time (never late)."""
        if not self.rows:
            self._opened_ns = None
        elif self._opened_ns is None:
            self._opened_ns = now_ns if self._last_take_ns is None else self._last_take_ns
        self._last_take_ns = now_ns
        return bool(self.rows) and (len(self.rows) >= self.max_events
                                    or now_ns - (self._opened_ns or now_ns) >= self.max_age_ns)

    def take_ready(self, now_ns: int, everything: bool = False) -> list[Outgoing]:
        """Every buffered event as records, when due (always, with ``everything``)."""
        if not (self.due(now_ns) or (everything and self.rows)):
            return []
        rows = self.rows[:]
        self.rows.clear()  # the same list: the SDK holds it
        self._opened_ns = None
        return self.group(rows)

    def group(self, rows: Sequence[Row]) -> list[Outgoing]:
        """These events as records (seq stamped in order); events no record can carry go
        to ``rejected``."""
        cols = _Columns.of(rows, self._partition, self._partitions is not None)
        for i in np.flatnonzero(~cols.valid):
            self.rejected.append(Rejected(rows[i], cols.reasons[int(i)]))
        out: list[Outgoing] = []
        for part in cols.groups():
            for piece in self._pieces(cols, part):
                out.append(self._outgoing(cols, piece))
        return out

    def _partition(self, volume_id: str) -> int | None:
        if self._partitions is None:
            return None
        part = self._partition_of.get(volume_id)
        if part is None:
            part = self._partition_of[volume_id] = default_partition(
                volume_id.encode(), self._partitions)
        return part

    def _pieces(self, cols: _Columns, idx: np.ndarray) -> list[np.ndarray]:
        """``idx`` cut into consecutive pieces of at most max_events events and
        max_record_bytes bytes (halving: a piece's volume table shrinks with it)."""
        if len(idx) > self.max_events:
            cut = [idx[k:k + self.max_events] for k in range(0, len(idx), self.max_events)]
            return [p for piece in cut for p in self._pieces(cols, piece)]
        if len(idx) > 1 and cols.record_bytes(idx, self.producer_id) > self.max_record_bytes:
            half = len(idx) // 2
            return self._pieces(cols, idx[:half]) + self._pieces(cols, idx[half:])
        return [idx]

    def _outgoing(self, cols: _Columns, idx: np.ndarray) -> Outgoing:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        refs, local = np.unique(cols.ref[idx], return_inverse=True)
        volumes = [cols.refs[r][0] for r in refs]
        tenants = [cols.refs[r][1] for r in refs]
        host = cols.refs[int(refs[0])][2]
        columns = {name: array[idx] for name, array in cols.arrays.items()}
        columns["volume"] = local
        record = layout2_record(self.producer_id, seq, host, volumes, tenants, columns)
        return Outgoing(volumes[0].encode(), record, len(idx), cols.part_of_ref[refs[0]])


class _Columns:
    """One flush's events as numpy columns: ``ref`` indexes the distinct (volume,
    tenant, host) triples, ``group`` is the partition (or the triple, while the
    partition count is unknown), ``valid`` marks what a record can carry."""

    def __init__(self, refs: list[tuple[Any, Any, Any]], ref: np.ndarray,
                 part_of_ref: list[int | None], arrays: dict[str, np.ndarray],
                 valid: np.ndarray, reasons: dict[int, str]) -> None:
        self.refs, self.ref, self.part_of_ref = refs, ref, part_of_ref
        self.known = all(p is not None for p in part_of_ref)
        self.arrays, self.valid, self.reasons = arrays, valid, reasons
        self.ref_bytes = np.array(
            [len(str(v).encode()) + len(str(t).encode()) + VOLUME_REF_OVERHEAD_BYTES
             for v, t, _ in refs], dtype=np.int64)

    @classmethod
    def of(cls, rows: Sequence[Row], partition_of: Any, known: bool) -> _Columns:
        vols, tens, ops, sts, offs, nbytes, submits, completes, hosts = zip(*rows, strict=True)
        refs, ref = _distinct(vols, tens, hosts)
        valid = np.ones(len(rows), dtype=bool)
        reasons: dict[int, str] = {}
        bad_refs = [r for r, (v, t, h) in enumerate(refs) if not _ids_ok(v, t, h)]
        for r in bad_refs:
            _reject(valid, reasons, np.flatnonzero(ref == r),
                    "volume_id and tenant_id must be strings, host_id a string or None")
        # a bad triple's events are invalid: any partition does (None: the count is unknown)
        part_of_ref = [(0 if known else None) if r in bad_refs else partition_of(v)
                       for r, (v, _, _) in enumerate(refs)]
        # op and status are codes record() looked up: 0..3 and 0..2
        arrays = {"op": np.frombuffer(bytes(ops), dtype=np.uint8),
                  "status": np.frombuffer(bytes(sts), dtype=np.uint8)}
        for name, values in (("offset", offs), ("bytes", nbytes), ("submit_ns", submits),
                             ("complete_ns", completes)):
            arrays[name] = _int64_column(values, name, valid, reasons)
        return cls(refs, ref, part_of_ref, arrays, valid, reasons)

    def record_bytes(self, idx: np.ndarray, producer_id: str) -> int:
        """An upper bound of the encoded size of a record of these events."""
        table = int(self.ref_bytes[np.unique(self.ref[idx])].sum())
        host = self.refs[int(self.ref[idx[0]])][2]
        ids = len(producer_id.encode()) + (len(host.encode()) if host else 0)
        return len(idx) * EVENT_WIRE_BYTES + table + ids + RECORD_OVERHEAD_BYTES

    def groups(self) -> list[np.ndarray]:
        """The valid events' indices, one array per record to make, in send order; a
        volume's events in their order (a stable sort), in one group or in groups
        that follow each other."""
        keys = self._group_keys()
        idx = np.flatnonzero(self.valid)
        # by record, then by volume within it: a record's events go by volume (the
        # worker then need not sort them), each volume's in their order
        order = idx[np.argsort(keys[idx] * len(self.refs) + self.ref[idx], kind="stable")]
        cuts = np.flatnonzero(np.diff(keys[order])) + 1
        return np.split(order, cuts) if len(order) else []

    def _group_keys(self) -> np.ndarray:
        if self.known:
            part = np.array(self.part_of_ref, dtype=np.int64)[self.ref]
        else:  # the count is unknown: each volume a partition of its own
            volumes: dict[Any, int] = {}
            part = np.array([volumes.setdefault(v, len(volumes)) for v, _, _ in self.refs],
                            dtype=np.int64)[self.ref]
        if len({v for v, _, _ in self.refs}) == len(self.refs):
            # every volume has one tenant and one host in this flush (the common case): a
            # record per partition and host (a record has one host)
            hosts: dict[Any, int] = {}
            host_of_ref = np.array([hosts.setdefault(h, len(hosts)) for _, _, h in self.refs],
                                   dtype=np.int64)
            return host_of_ref[self.ref] * (int(part.max()) + 1) + part
        return _generations(self.ref, self.refs, part, self.valid) * (int(part.max()) + 1) + part


def _distinct(vols: Sequence[Any], tens: Sequence[Any], hosts: Sequence[Any]
              ) -> tuple[list[tuple[Any, Any, Any]], np.ndarray]:
    """The distinct (volume, tenant, host) triples in first-appearance order, and each
    event's index into them (C-level dict and map calls: this runs per event)."""
    triples = list(dict.fromkeys(zip(vols, tens, hosts, strict=True)))
    volumes = list(dict.fromkeys(vols))
    if len(volumes) == len(triples):  # a triple per volume: index by volume id
        keys: Sequence[Any] = vols
        index = {v: i for i, v in enumerate(volumes)}
    else:
        keys = list(zip(vols, tens, hosts, strict=True))
        index = {t: i for i, t in enumerate(triples)}
    return triples, np.fromiter(map(index.__getitem__, keys), dtype=np.intp, count=len(vols))


def _generations(ref: np.ndarray, refs: list[tuple[Any, Any, Any]], part: np.ndarray,
                 valid: np.ndarray) -> np.ndarray:
    """Per event, which of its partition's successive records carries it: a new one when
    its volume shows another tenant, or the partition another host, than the current."""
    gen = np.zeros(len(ref), dtype=np.int64)
    current: dict[int, tuple[int, Any, dict[Any, Any]]] = {}  # part -> (gen, host, tenants)
    for i in np.flatnonzero(valid).tolist():
        volume, tenant, host = refs[ref[i]]
        p = int(part[i])
        g, cur_host, tenants = current.get(p, (0, host, {}))
        if cur_host != host or tenants.get(volume, tenant) != tenant:
            g, cur_host, tenants = g + 1, host, {}
        tenants[volume] = tenant
        current[p] = (g, cur_host, tenants)
        gen[i] = g
    return gen


def _ids_ok(volume: Any, tenant: Any, host: Any) -> bool:
    return isinstance(volume, str) and isinstance(tenant, str) and (
        host is None or isinstance(host, str))


def _int64_column(values: Sequence[Any], name: str, valid: np.ndarray,
                  reasons: dict[int, str]) -> np.ndarray:
    """The column as int64; an event whose value is no integer or does not fit int64 is
    marked invalid (never truncated: a float would be, by numpy's casting)."""
    if set(map(type, values)) <= {int}:  # what callers pass: fromiter is 5x np.array
        try:
            return np.fromiter(values, dtype=np.int64, count=len(values))
        except OverflowError:
            pass
    bad = [i for i, v in enumerate(values)
           if not (isinstance(v, (int, np.integer)) and INT64_MIN <= int(v) <= INT64_MAX)]
    _reject(valid, reasons, np.array(bad, dtype=np.intp),
            f"{name} must be an integer that fits in 64 bits (signed)")
    bad_set = set(bad)
    good = [0 if i in bad_set else int(v) for i, v in enumerate(values)]
    return np.array(good, dtype=np.int64)


def _reject(valid: np.ndarray, reasons: dict[int, str], idx: np.ndarray, reason: str) -> None:
    for i in idx.tolist():
        if valid[i]:
            valid[i] = False
            reasons[i] = reason
