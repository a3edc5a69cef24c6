"""All windows of one input partition, kept in a bytes -> bytes mapping (a Faust table).

Pure logic: no faust, no aiokafka. The worker keeps one
:class:`PartitionWindows` per raw-topic partition it owns; every state change
goes through the mapping, so the table's changelog can rebuild it after a
crash or a rebalance. Keys carry the partition, so a rebuild finds its own.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence

import orjson

from .accounting import table_json
from .billing import BillingBook, BillingEntry, BillingRecord
from .windowing import (
    Emission,
    PartitionClock,
    RollupBook,
    WindowBook,
    WindowEntry,
    WindowKey,
    WindowSettings,
)
from .windows import NS_PER_S, WindowAcc

Table = MutableMapping[bytes, bytes]
LENGTHS_NS = (NS_PER_S, 60 * NS_PER_S, 3600 * NS_PER_S)
EVICT_EVERY_NS = 60 * NS_PER_S
DIRECT_LOOKUPS_MAX = 10_000  # windows_of: look each start up, up to this many, else scan


class _Encoded(MutableMapping[WindowKey, object]):
    """A typed view of the table's keys under one prefix: (volume_id, start) -> value."""

    def __init__(self, table: Table, prefix: bytes) -> None:
        self.table = table
        self.prefix = prefix

    def _key(self, key: WindowKey) -> bytes:
        return b"%s%s|%d" % (self.prefix, key[0].encode(), key[1])

    def _decode_key(self, raw: bytes) -> WindowKey:
        volume, start = raw[len(self.prefix):].rsplit(b"|", 1)
        return volume.decode(), int(start)

    def encode(self, value: object) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> object:
        raise NotImplementedError

    def __getitem__(self, key: WindowKey) -> object:
        return self.decode(self.table[self._key(key)])

    def __setitem__(self, key: WindowKey, value: object) -> None:
        self.table[self._key(key)] = self.encode(value)

    def __delitem__(self, key: WindowKey) -> None:
        del self.table[self._key(key)]

    def __iter__(self) -> Iterator[WindowKey]:
        return (self._decode_key(k) for k in list(self.table) if k.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class EntryStore(_Encoded):
    def encode(self, value: object) -> bytes:
        assert isinstance(value, WindowEntry)
        return table_json([value.tenant_id, value.acc.to_list(), value.revision, value.emitted,
                           value.emitted_offset])

    def decode(self, data: bytes) -> WindowEntry:
        tenant_id, acc, revision, emitted, *offset = orjson.loads(data)  # older: no offset
        return WindowEntry(tenant_id, WindowAcc.from_list(acc), revision, emitted,
                           offset[0] if offset else -1)


class PartsStore(_Encoded):
    def encode(self, value: object) -> bytes:
        assert isinstance(value, dict)
        return table_json([[start, acc.to_list()] for start, acc in value.items()])

    def decode(self, data: bytes) -> dict[int, WindowAcc]:
        return {start: WindowAcc.from_list(acc) for start, acc in orjson.loads(data)}


class BillingStore(_Encoded):
    def encode(self, value: object) -> bytes:
        assert isinstance(value, BillingEntry)
        return table_json([value.tenant_id, value.counters, value.next_sequence,
                           value.unconfirmed])

    def decode(self, data: bytes) -> BillingEntry:
        tenant_id, counters, next_sequence, *unconfirmed = orjson.loads(data)  # older: none
        return BillingEntry(tenant_id, counters, next_sequence,
                            unconfirmed[0] if unconfirmed else [])


class SeqStore(_Encoded):
    """Per volume: the highest seq per producer whose events these windows and billing
    hours hold (key (volume_id, 0))."""

    def encode(self, value: object) -> bytes:
        assert isinstance(value, dict)
        return table_json(value)

    def decode(self, data: bytes) -> dict[str, int]:
        seqs: dict[str, int] = orjson.loads(data)
        return seqs


class PartitionWindows:
    """The clock, the 1 s windows, their 1 m and 1 h rollups and the billing hours of one
    partition. Window records are returned; billing records wait in :meth:`take_billing`."""

    def __init__(self, partition: int, table: Table, settings: WindowSettings,
                 keep_ns: Sequence[int] = (0, 0, 0), retention_ns: int | None = None) -> None:
        prefix = b"%d|" % partition
        self.table = table
        self.clock_key = prefix + b"clock"
        self.clock = PartitionClock(settings.grace_ns, settings.idle_timeout_ns)
        if self.clock_key in table:
            self.clock.watermark_ns, self.clock.last_input_wall_ns = orjson.loads(
                table[self.clock_key])
        self.books = [WindowBook(settings, EntryStore(table, prefix + b"w%d|" % n), n)  # type: ignore[arg-type]
                      for n in LENGTHS_NS]
        self.rollups = [RollupBook(book, PartsStore(table, prefix + b"p%d|" % book.window_len_ns))  # type: ignore[arg-type]
                        for book in self.books[1:]]
        self.keep_ns = keep_ns  # per length: how long past the horizon to keep (queries)
        self.billing = BillingBook(BillingStore(table, prefix + b"b|"))  # type: ignore[arg-type]
        self.billing.rebuild_index()
        # The windows' own replay check: the counters table has one too, but it is another
        # changelog topic, and a crash can land one table's writes without the other's.
        # Written after everything a record changes here, in this table's changelog
        # partition, so if it landed, they did.
        self.applied = SeqStore(table, prefix + b"q|")
        self.retention_ns = retention_ns  # billing hours are kept while events can reach them
        self.billing_out: list[BillingRecord] = []
        self.last_evict_wall_ns = -EVICT_EVERY_NS
        for book in self.books:
            book.rebuild_index()

    def take_billing(self) -> list[BillingRecord]:
        """Billing records made since the last call: hours closed and adjustments."""
        out, self.billing_out = self.billing_out, []
        return out

    def on_events(
        self, volume_id: str, tenant_id: str, ops: bytes, statuses: bytes, nbytes: Sequence[int],
        submit_ns: Sequence[int], complete_ns: Sequence[int], indexes: Sequence[int],
        wall_ns: int, producer: tuple[str, int] | None = None, offset: int = -1,
    ) -> list[Emission]:
        """Validated events of one record; returns every window record to publish.

        ``producer`` = (producer_id, seq) of the record: one these windows already hold
        (at or below the highest seq applied for the volume and producer) changes
        nothing; else it is marked applied, last."""
        if not indexes:
            return []
        self._at(offset)
        seqs: dict[str, int] = {}
        if producer is not None:
            seqs = self.applied.get((volume_id, 0)) or {}  # type: ignore[assignment]
            if producer[1] <= seqs.get(producer[0], -1):
                return []
        self.billing_out += self.billing.add_events(
            volume_id, tenant_id, ops, statuses, nbytes, submit_ns, complete_ns, indexes)
        revised = self.books[0].add_events(
            volume_id, tenant_id, ops, statuses, nbytes, submit_ns, complete_ns, indexes,
            self.clock.watermark_ns,
        )
        self.clock.on_input(max(complete_ns[i] for i in indexes), wall_ns)
        emitted = self._cascade(revised) + self._close()
        if producer is not None:
            seqs[producer[0]] = producer[1]
            self.applied[(volume_id, 0)] = seqs
        return emitted

    @property
    def needs_ticks(self) -> bool:
        """Whether wall-clock ticks can still close something here."""
        return self.billing.has_open_hours or any(book.has_open_windows for book in self.books)

    def on_tick(self, wall_ns: int, offset: int = -1) -> list[Emission]:
        """The wall clock moved: an idle partition's windows may close."""
        self._at(offset)
        self.clock.on_wall_clock(wall_ns)
        emitted = self._close()
        if wall_ns - self.last_evict_wall_ns >= EVICT_EVERY_NS:
            self._evict()  # scans the partition's windows: not every tick
            if self.retention_ns is not None:
                for key in self.billing.evictable(wall_ns - self.retention_ns):
                    del self.billing.store[key]
            self.last_evict_wall_ns = wall_ns
        return emitted

    def _at(self, offset: int) -> None:
        """What is emitted from here on was made by the raw record at ``offset``."""
        for book in self.books:
            book.offset = offset
        self.billing.offset = offset

    def replay_outputs(self, committed: int) -> list[Emission]:
        """After an assignment: everything emitted while processing raw offsets at or past
        ``committed`` (the group's committed offset), again.

        The worker commits an input offset only after flushing what processing it
        produced, so outputs made before ``committed`` have landed; those made after it
        may not have, while the tables that say they were made did (a crash between the
        two). Re-reading the input does not make them again (the replay checks skip it),
        so they are sent again from the state: each window's current revision (the latest
        revision wins, so a repeat changes nothing) and each billing record kept since
        (same record_id, same content). Billing records before ``committed`` are dropped
        from the entries. Returns the window emissions; the billing records go to
        :meth:`take_billing`."""
        emissions = [Emission(volume_id, entry.tenant_id, entry.acc, entry.revision - 1)
                     for book in self.books for (volume_id, _), entry in book.store.items()
                     if entry.emitted and entry.emitted_offset >= committed]
        for (volume_id, start), entry in list(self.billing.store.items()):
            if not entry.unconfirmed:
                continue
            kept = [u for u in entry.unconfirmed if u[0] >= committed]
            self.billing_out += [BillingRecord(entry.tenant_id, volume_id, start, sequence,
                                               tuple(counters))
                                 for _, sequence, counters in kept]
            if len(kept) != len(entry.unconfirmed):
                entry.unconfirmed = kept
                self.billing.store[(volume_id, start)] = entry
        return emissions

    def _close(self) -> list[Emission]:
        closed = self._cascade(self.books[0].close_for(self.clock.watermark_ns))
        self.billing_out += self.billing.close_for(self.clock.watermark_ns)
        clock = table_json([self.clock.watermark_ns, self.clock.last_input_wall_ns])
        if self.table.get(self.clock_key) != clock:
            self.table[self.clock_key] = clock
        return closed

    def _cascade(self, emissions: list[Emission], level: int = 0) -> list[Emission]:
        """Publish these, feeding each into the rollup above it, and so on upwards."""
        out: list[Emission] = []
        for emission in emissions:
            out.append(emission)
            if level < len(self.rollups):
                rollup = self.rollups[level]
                out += self._cascade(rollup.add_part(emission), level + 1)
        if level < len(self.rollups):
            out += self._cascade(self.rollups[level].close_for(self.clock.watermark_ns), level + 1)
        return out

    def _evict(self) -> None:
        """Drop windows past horizon + query retention, and rollup parts past the horizon."""
        watermark = self.clock.watermark_ns
        if watermark is None:
            return
        for book, keep_ns in zip(self.books, self.keep_ns, strict=True):
            for key in book.evictable(watermark - keep_ns):
                del book.store[key]
        for rollup in self.rollups:
            frozen_before = watermark - rollup.inner.settings.horizon_ns
            for key in list(rollup.parts):
                if key[1] + rollup.inner.window_len_ns <= frozen_before:
                    del rollup.parts[key]

    def windows_of(self, volume_id: str, length_ns: int, from_ns: int, to_ns: int
                   ) -> list[WindowEntry]:
        """The stored windows of one volume starting in [from_ns, to_ns), for queries."""
        book = self.books[LENGTHS_NS.index(length_ns)]
        first = -(-from_ns // length_ns) * length_ns  # the first window start >= from_ns
        if to_ns <= first:
            return []
        if (to_ns - first) // length_ns <= DIRECT_LOOKUPS_MAX:  # cheaper than a key scan
            found = (book.store.get((volume_id, start))
                     for start in range(first, to_ns, length_ns))
            return [entry for entry in found if entry is not None]
        keys = sorted(k for k in book.store if k[0] == volume_id and from_ns <= k[1] < to_ns)
        return [book.store[k] for k in keys]
