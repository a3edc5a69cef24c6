"""The hourly billing ledger of one input partition (SEMANTICS.md section 5).

Pure logic: no faust, no aiokafka. Per (volume, hour of complete_ns) the book
keeps the section 2 counters of the hour while it is open; when the partition's
watermark passes the hour's end it emits record 0 with them. An event that
arrives for an hour already emitted makes an adjustment record holding only the
delta of that event's record, with the next sequence number. Nothing is ever
rewritten, so the records of a volume add up to its cumulative counters.

After emission an entry keeps only its next sequence number, until no accepted
event can reach its hour any more (see :meth:`BillingBook.evictable`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.batch import Columns, EventBatch
from streams.core.closing import ClosingIndex
from streams.core.counters import N_SLOTS, named_counters
from streams.core.keys import billing_record_id
from streams.core.times import HOUR_NS
from streams.core.windows.ranges import entries_between
from streams.core.windows.vector import hour_partials

BillingKey = tuple[str, int]  # (volume_id, hour_start_ns)


@dataclass(slots=True)
class BillingEntry:
    tenant_id: str
    counters: list[int] | None = field(default_factory=lambda: [0] * N_SLOTS)  # None: emitted
    next_sequence: int = 0
    # Records emitted and not known to have landed: [raw offset, sequence, counters].
    # Dropped once the group's committed offset passes them (PartitionWindows.replay_outputs).
    unconfirmed: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BillingRecord:
    tenant_id: str
    volume_id: str
    hour_start_ns: int
    sequence: int
    counters: tuple[int, ...]

    @property
    def record_id(self) -> str:
        return billing_record_id(self.tenant_id, self.volume_id, self.hour_start_ns, self.sequence)

    @property
    def kind(self) -> str:
        return "hour" if self.sequence == 0 else "adjustment"

    def to_dict(self) -> dict[str, Any]:
        """The BillingRecord Avro record (schemas/billing_record.avsc)."""
        return {"record_id": self.record_id, "tenant_id": self.tenant_id,
                "volume_id": self.volume_id, "hour_start_ns": self.hour_start_ns,
                "hour_length_ns": HOUR_NS, "sequence": self.sequence, "kind": self.kind,
                **named_counters(self.counters)}


@dataclass
class BillingBook:
    """Open hours and the sequence numbers of emitted hours, for the volumes of a partition."""

    store: MutableMapping[BillingKey, BillingEntry]
    _closing: ClosingIndex = field(default_factory=ClosingIndex)  # open hours by end

    @property
    def has_open_hours(self) -> bool:
        return bool(self._closing)

    def rebuild_index(self) -> None:
        """After recovery: find the hours still to close in the store."""
        self._closing = ClosingIndex((start + HOUR_NS, volume)
                                     for (volume, start), entry in self.store.items()
                                     if entry.counters is not None)

    def add_events(self, batch: EventBatch, offset: int = -1) -> list[BillingRecord]:
        """:meth:`add_columns` for one volume's events."""
        return self.add_columns(Columns.of_batch(batch), offset)

    def add_columns(self, columns: Columns, offset: int = -1) -> list[BillingRecord]:
        """Count validated events of any volumes, per (volume, hour) in one vectorised
        pass; returns the adjustments for hours already emitted (``offset``: the raw
        offset being processed, stamped on them)."""
        adjustments: list[BillingRecord] = []
        store, push = self.store, self._closing.push
        for part in hour_partials(columns):
            volume_id, start = columns.volumes[part.volume], part.hour_start_ns
            key = (volume_id, start)
            entry = store.get(key)
            if entry is None:  # a new hour: its counters are this part's (a list of its own)
                entry = BillingEntry(columns.tenants[part.volume], part.counters)
                push(start + HOUR_NS, volume_id)
            elif entry.counters is not None:
                entry.counters = [mine + theirs for mine, theirs
                                  in zip(entry.counters, part.counters, strict=True)]
            else:
                adjustments.append(BillingRecord(entry.tenant_id, volume_id, start,
                                                 entry.next_sequence, tuple(part.counters)))
                entry.unconfirmed.append([offset, entry.next_sequence, part.counters])
                entry.next_sequence += 1
            store[key] = entry
        return adjustments

    def close_for(self, watermark_ns: int | None, offset: int = -1) -> list[BillingRecord]:
        """Record 0 of every open hour the watermark has passed, in order of their ends
        (``offset``: the raw offset being processed, stamped on them)."""
        closed: list[BillingRecord] = []
        for end_ns, volume_id in self._closing.take_due(watermark_ns):
            start = end_ns - HOUR_NS
            entry = self.store.get((volume_id, start))
            if entry is None or entry.counters is None:
                continue
            closed.append(BillingRecord(entry.tenant_id, volume_id, start, entry.next_sequence,
                                        tuple(entry.counters)))
            entry.unconfirmed.append([offset, entry.next_sequence, entry.counters])
            entry.counters, entry.next_sequence = None, entry.next_sequence + 1
            self.store[(volume_id, start)] = entry
        return closed

    def evictable(self, oldest_accepted_ns: int) -> list[BillingKey]:
        """Emitted hours that no accepted event can reach: those ending an hour or more
        before the oldest complete_ns the worker still accepts (wall clock - retention);
        the spare hour covers workers whose clocks differ. Reads the hours that start
        before that only (a range of the store's keys, windows/ranges.py); no lower bound
        is kept between calls, since another clock may still open an hour down there."""
        end_ns = oldest_accepted_ns - 2 * HOUR_NS + 1  # start + 2 h <= oldest_accepted_ns
        return [key for key, entry in entries_between(self.store, None, end_ns)
                if entry.counters is None]
