"""The window stages of one partition, kept in a bytes -> bytes mapping (a Faust table).

Pure logic: no faust, no aiokafka. The worker keeps, per partition it owns, one
:class:`PartitionWindows` (the accounting agent's stage: the clock, the 1 s
windows, billing) and two :class:`RollupWindows` (the rollup agents' stages: 1 m
windows from the records of ``ioacct.stats.1s``, 1 h from ``ioacct.stats.1m``,
closed by the watermark markers between them). Every state change goes through
the mapping, so the table's changelog can rebuild it after a crash or a
rebalance. Keys carry the partition and the stage, so a rebuild finds its own.
:class:`WindowChain` runs the three stages in one process, for tests and the
bench.

A worker killed with -9 lands any prefix of the changelog's messages, so each
public call that changes the state (a record's events, a Tick, the replay of
outputs) is one unit: its writes go through a :class:`JournaledTable`, which
lands them all or none (as seen by the next owner).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson

from streams.core.billing import BillingBook, BillingEntry, BillingRecord
from streams.core.counters import table_json
from streams.core.times import NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS, WindowAcc, window_start_ns
from streams.core.windows.book import (
    Emission,
    Part,
    PartitionClock,
    RollupBook,
    WindowBook,
    WindowEntry,
    WindowKey,
    WindowSettings,
)

Table = MutableMapping[bytes, bytes]
EVICT_EVERY_NS = 60 * NS_PER_S
DIRECT_LOOKUPS_MAX = 10_000  # windows_of: look each start up, up to this many, else scan
_ENTRY = struct.Struct("<Ii")  # key length, value length (-1: a delete)
_HEADER = struct.Struct("<BQII")  # format, unit, chunk index, chunks in the unit
JOURNAL_FORMAT = 1
JOURNAL_CHUNK_BYTES = 512 * 1024  # under Kafka's and faust's 1 MB default message limits


class JournaledTable(MutableMapping[bytes, bytes]):
    """A table whose writes land all or none: a redo journal in front of it.

    Between two :meth:`commit` calls (a unit) the writes and deletes wait in ``pending``,
    which reads see first. :meth:`commit` writes the unit's journal, every pending write
    and delete in one message, and only then the writes themselves. A changelog partition
    lands any prefix of its messages, in order, so after a crash either the journal of the
    last unit did not land, and then nothing of that unit did, or it did, and some prefix
    of the unit's writes with it. A new :class:`JournaledTable` over the restored table
    takes the writes of the last whole journal that differ from the table as pending again:
    reads see the whole unit, and the next commit journals and writes them with its own.

    Nothing is written outside a commit: faust refuses table writes outside stream
    processing, and the worker may build these in a web view.

    A unit bigger than ``chunk_bytes`` (Kafka refuses messages over 1 MB by default) is
    journaled in several messages, each saying its unit and the unit's number of chunks:
    only a journal whose chunks all landed is redone (the writes follow its last chunk).
    The chunks of a unit that did not all land may have overwritten the first ones of the
    unit before, whose redo may still be pending: so units take turns between two journal
    slots, and a unit never overwrites the slot of the last whole journal."""

    def __init__(self, table: MutableMapping[bytes, bytes], journal_key: bytes,
                 chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> None:
        self.table = table
        self.journal_key = journal_key
        self.chunk_bytes = chunk_bytes
        self.pending: dict[bytes, bytes | None] = {}  # None: deleted
        self.unit = 0  # the highest unit number journaled
        self.slot = 1  # the slot of the last whole journal: the next unit takes the other
        self.chunks = [0, 0]  # per slot: chunks 0 .. n-1 are in the table
        self.first_keys = (self.chunk_key(0, 0), self.chunk_key(1, 0))
        self.redone = 0  # writes taken again from a journal when built
        self._recover()

    # -- reads see the pending writes first -----------------------------------------------

    def __getitem__(self, key: bytes) -> bytes:
        pending = self.pending
        if key in pending:
            value = pending[key]
            if value is None:
                raise KeyError(key)
            return value
        return self.table[key]

    def get(self, key: bytes, default: Any = None) -> Any:
        pending = self.pending
        if key in pending:
            value = pending[key]
            return default if value is None else value
        return self.table.get(key, default)

    def __contains__(self, key: object) -> bool:
        pending = self.pending
        if key in pending:
            return pending[key] is not None  # type: ignore[index]
        return key in self.table

    def __iter__(self) -> Iterator[bytes]:
        if not self.pending:
            return iter(self.table)
        return self._merged()

    def _merged(self) -> Iterator[bytes]:
        pending = self.pending
        for key in self.table:
            if key not in pending:
                yield key
        for key, value in list(pending.items()):
            if value is not None:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- writes wait for the commit -------------------------------------------------------

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.pending[key] = value

    def __delitem__(self, key: bytes) -> None:
        if key not in self:
            raise KeyError(key)
        self.pending[key] = None

    def discard(self) -> None:
        """Forget the pending writes (a unit that failed half-way)."""
        self.pending.clear()

    def commit(self) -> int:
        """Write the pending writes, journal first; returns how many were written.

        A write of the value the table holds is written all the same (looking each one
        up costs more than the rare repeat: callers skip the frequent ones, as the clock)."""
        pending = self.pending
        if not pending:
            return 0
        table = self.table
        changes = [(key, value) for key, value in pending.items()
                   if value is not None or key in table]  # a key made and dropped: nothing
        if changes:
            self._journal(changes)
            for key, value in changes:
                if value is None:
                    del table[key]
                else:
                    table[key] = value
        pending.clear()
        return len(changes)

    # -- the journal ----------------------------------------------------------------------

    def chunk_key(self, slot: int, index: int) -> bytes:
        return b"%s|%d|%d" % (self.journal_key, slot, index)

    def _journal(self, changes: list[tuple[bytes, bytes | None]]) -> None:
        """Chunks of [header, then per entry: key and value lengths, key, value]."""
        self.unit += 1
        slot = 1 - self.slot
        pack = _ENTRY.pack
        parts = [_HEADER.pack(JOURNAL_FORMAT, self.unit, 0, 1)]  # if it is one chunk
        for key, value in changes:
            if value is None:
                parts += (pack(len(key), -1), key)
            else:
                parts += (pack(len(key), len(value)), key, value)
        journal = b"".join(parts)
        if len(journal) - _HEADER.size <= self.chunk_bytes:  # nearly always: one message
            self.table[self.first_keys[slot]] = journal
            self._written(slot, 1)
            return
        chunks: list[list[bytes]] = [[]]
        size, at = 0, 1
        for _, value in changes:
            entry = parts[at:at + (2 if value is None else 3)]
            at += len(entry)
            entry_bytes = sum(map(len, entry))
            if size and size + entry_bytes > self.chunk_bytes:
                chunks.append([])
                size = 0
            size += entry_bytes
            chunks[-1] += entry
        for index, chunk in enumerate(chunks):  # in order: the last one lands last
            self.table[self.chunk_key(slot, index)] = (
                _HEADER.pack(JOURNAL_FORMAT, self.unit, index, len(chunks)) + b"".join(chunk))
        self._written(slot, len(chunks))

    def _written(self, slot: int, count: int) -> None:
        """A journal of ``count`` chunks is whole in ``slot``: drop the chunks left there by
        a bigger one (last first, so that those left are always chunks 1 .. n-1)."""
        self.slot = slot
        for index in range(self.chunks[slot] - 1, count - 1, -1):
            key = self.chunk_key(slot, index)
            if key in self.table:
                del self.table[key]
        self.chunks[slot] = count

    def _read_slot(self, slot: int) -> tuple[int, list[bytes] | None]:
        """The unit number of the journal in a slot (-1: none), and its chunks if whole."""
        count = 0
        while self.chunk_key(slot, count) in self.table:
            count += 1
        self.chunks[slot] = count
        first = self.table.get(self.chunk_key(slot, 0))
        if first is None:
            return -1, None
        fmt, unit, _, count = _HEADER.unpack_from(first)
        if fmt != JOURNAL_FORMAT:
            raise ValueError(f"{self.journal_key!r}: journal format {fmt}, not {JOURNAL_FORMAT}")
        chunks = [first]
        for index in range(1, count):
            chunk = self.table.get(self.chunk_key(slot, index))
            if chunk is None or _HEADER.unpack_from(chunk)[1:3] != (unit, index):
                return unit, None  # its last chunks never landed, so none of its writes did
            chunks.append(chunk)
        return unit, chunks

    def _recover(self) -> None:
        slots = [self._read_slot(0), self._read_slot(1)]
        self.unit = max(0, slots[0][0], slots[1][0])
        whole = [(unit, slot, chunks) for slot, (unit, chunks) in enumerate(slots) if chunks]
        if not whole:
            return
        _, self.slot, chunks = max(whole)
        table = self.table
        for chunk in chunks:
            for key, value in decode_journal(chunk):
                if (key in table) if value is None else table.get(key) != value:
                    self.pending[key] = value
        self.redone = len(self.pending)


def decode_journal(chunk: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """The (key, value or None for a delete) entries of one journal chunk."""
    unpack = _ENTRY.unpack_from
    at, end = _HEADER.size, len(chunk)
    while at < end:
        key_len, value_len = unpack(chunk, at)
        at += _ENTRY.size
        key = chunk[at:at + key_len]
        at += key_len
        if value_len < 0:
            yield key, None
        else:
            yield key, chunk[at:at + value_len]
            at += value_len


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
    """A rollup's parts: (volume_id, part start) -> (revision, integers)."""

    def encode(self, value: object) -> bytes:
        assert isinstance(value, tuple)
        revision, acc = value
        return table_json([revision, acc.to_list()])

    def decode(self, data: bytes) -> Part:
        revision, acc = orjson.loads(data)
        return revision, WindowAcc.from_list(acc)


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


class _Stage:
    """What :func:`_unit` needs of a stage: its journaled table, and how to undo a unit's
    effects outside the table."""

    table: JournaledTable

    def _mark(self) -> int:
        return 0

    def _abort(self, mark: int) -> None:
        self.table.discard()


P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound=_Stage)


def _unit(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """A public call that changes the state: its writes land all or none."""

    @functools.wraps(method)
    def unit(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        mark = self._mark()
        try:
            result = method(self, *args, **kwargs)
        except BaseException:
            self._abort(mark)
            raise
        self.table.commit()
        return result

    return unit


class _Announcer:
    """When to send a watermark marker downstream: each time the watermark enters a new
    window of ``length_ns`` (the stage below closes windows only at multiples of it), and
    after a rebuild, whose last marker may not have landed."""

    def __init__(self, length_ns: int) -> None:
        self.length_ns = length_ns
        self.announced: int | None = None  # the window index last announced

    def take(self, watermark_ns: int | None) -> int | None:
        if watermark_ns is None or watermark_ns // self.length_ns == self.announced:
            return None
        self.announced = watermark_ns // self.length_ns
        return watermark_ns

    def forget(self) -> None:
        self.announced = None


class PartitionWindows(_Stage):
    """The clock, the 1 s windows and the billing hours of one raw partition: the
    accounting agent's stage. Window records are returned; billing records wait in
    :meth:`take_billing`, the watermark marker for the 1 m stage in :meth:`take_marker`.

    Every public call that changes them (:meth:`on_events`, :meth:`on_tick`,
    :meth:`replay_outputs`) is a unit of the :class:`JournaledTable` in front of the
    table: after a crash the next owner sees either all of its writes or none."""

    def __init__(self, partition: int, table: Table, settings: WindowSettings,
                 keep_ns: Sequence[int] = (0, 0, 0), retention_ns: int | None = None,
                 journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> None:
        prefix = b"%d|" % partition
        # First: the last unit's writes, again if the crash cut them, under everything read.
        self.table = table = JournaledTable(table, prefix + b"journal", journal_chunk_bytes)
        self.clock_key = prefix + b"clock"
        self.clock = PartitionClock(settings.grace_ns, settings.idle_timeout_ns)
        if self.clock_key in table:
            self.clock.watermark_ns, self.clock.last_input_wall_ns = orjson.loads(
                table[self.clock_key])
        self.books = [WindowBook(settings, EntryStore(table, prefix + b"w%d|" % NS_PER_S),  # type: ignore[arg-type]
                                 NS_PER_S)]
        self.keep_ns = keep_ns[0]  # how long past the horizon to keep 1 s windows (queries)
        self.billing = BillingBook(BillingStore(table, prefix + b"b|"))  # type: ignore[arg-type]
        self.billing.rebuild_index()
        # The windows' own replay check: the counters table has one too, but it is another
        # changelog topic, and a crash can land one table's writes without the other's.
        # Written in the unit of the record's events, so it landed if and only if they did;
        # it also skips a producer's duplicate of a record, at another offset.
        self.applied = SeqStore(table, prefix + b"q|")
        self.retention_ns = retention_ns  # billing hours are kept while events can reach them
        self.billing_out: list[BillingRecord] = []
        self.last_evict_wall_ns = -EVICT_EVERY_NS
        self.marker = _Announcer(NS_PER_S)
        self.books[0].rebuild_index()

    def _mark(self) -> int:
        return len(self.billing_out)

    def _abort(self, mark: int) -> None:
        """A unit failed half-way: forget its writes, and the indexes and billing records
        it made from them."""
        self.table.discard()
        del self.billing_out[mark:]
        self.books[0].rebuild_index()
        self.billing.rebuild_index()

    def take_billing(self) -> list[BillingRecord]:
        """Billing records made since the last call: hours closed and adjustments."""
        out, self.billing_out = self.billing_out, []
        return out

    def take_marker(self) -> int | None:
        """The watermark to tell the 1 m stage, after this call's window records: it closes
        a minute once the 1 s windows of it are all in (SEMANTICS.md section 4)."""
        return self.marker.take(self.clock.watermark_ns)

    @_unit
    def on_events(
        self, volume_id: str, tenant_id: str, ops: bytes, statuses: bytes, nbytes: Sequence[int],
        submit_ns: Sequence[int], complete_ns: Sequence[int], indexes: Sequence[int],
        wall_ns: int, producer: tuple[str, int] | None = None, offset: int = -1,
    ) -> list[Emission]:
        """Validated events of one record; returns every window record to publish.

        ``producer`` = (producer_id, seq) of the record: one these windows already hold
        (at or below the highest seq applied for the volume and producer) changes
        nothing; else it is marked applied, in the same unit."""
        if not indexes:
            return []
        self.books[0].offset = self.billing.offset = offset
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
        emitted = revised + self._close()
        if producer is not None:
            seqs[producer[0]] = producer[1]
            self.applied[(volume_id, 0)] = seqs
        return emitted

    @property
    def needs_ticks(self) -> bool:
        """Whether wall-clock ticks can still close something here (the stages above are
        asked by the worker: their clock is this one's markers)."""
        return self.billing.has_open_hours or self.books[0].has_open_windows

    @_unit
    def on_tick(self, wall_ns: int, offset: int = -1, committed: int | None = None
                ) -> list[Emission]:
        """The wall clock moved: an idle partition's windows may close. ``committed``: the
        input offset the group has committed (windows emitted at or past it are kept)."""
        self.books[0].offset = self.billing.offset = offset
        self.clock.on_wall_clock(wall_ns)
        emitted = self._close()
        if wall_ns - self.last_evict_wall_ns >= EVICT_EVERY_NS:
            self._evict(committed)  # scans the partition's windows: not every tick
            if self.retention_ns is not None:
                for key in self.billing.evictable(wall_ns - self.retention_ns):
                    del self.billing.store[key]
            self.last_evict_wall_ns = wall_ns
        return emitted

    @_unit
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
        :meth:`take_billing`, and the watermark (whose marker may be lost too) to
        :meth:`take_marker`."""
        self.marker.forget()
        emissions = _emitted_since(self.books[0], committed)
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
        closed = self.books[0].close_for(self.clock.watermark_ns)
        self.billing_out += self.billing.close_for(self.clock.watermark_ns)
        clock = table_json([self.clock.watermark_ns, self.clock.last_input_wall_ns])
        if self.table.get(self.clock_key) != clock:
            self.table[self.clock_key] = clock
        return closed

    def _evict(self, committed: int | None) -> None:
        """Drop 1 s windows past horizon + query retention whose records have landed."""
        watermark = self.clock.watermark_ns
        if watermark is None:
            return
        book = self.books[0]
        for key in book.evictable(watermark - self.keep_ns, committed):
            del book.store[key]

    def windows_of(self, volume_id: str, length_ns: int, from_ns: int, to_ns: int
                   ) -> list[WindowEntry]:
        """The stored 1 s windows of one volume starting in [from_ns, to_ns), for queries."""
        if length_ns != NS_PER_S:
            raise ValueError(f"this stage keeps 1 s windows, not {length_ns} ns")
        return _windows_of(self.books[0], volume_id, from_ns, to_ns)


class RollupWindows(_Stage):
    """One rollup stage of one partition: the windows of ``window_len_ns`` built from the
    window records of ``inner_len_ns`` that the stage below published to its topic, in the
    order of that topic's partition, with the watermark markers between them.

    A rollup agent feeds :meth:`on_window` and :meth:`on_watermark` with each record it
    reads (``offset``: the record's offset, stamped on what it makes, for
    :meth:`replay_outputs`); each call is a unit of a :class:`JournaledTable` of its own.
    A record read again (after a crash, or sent again by the stage below) changes
    nothing: a part is only taken when its revision is newer (:class:`RollupBook`)."""

    def __init__(self, partition: int, table: Table, settings: WindowSettings,
                 inner_len_ns: int, window_len_ns: int, keep_ns: int = 0,
                 journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> None:
        prefix = b"%d|r%d|" % (partition, window_len_ns // NS_PER_S)
        self.table = table = JournaledTable(table, prefix + b"journal", journal_chunk_bytes)
        self.inner_len_ns = inner_len_ns
        self.clock_key = prefix + b"clock"
        self.watermark_ns: int | None = (orjson.loads(table[self.clock_key])
                                         if self.clock_key in table else None)
        self.book = WindowBook(settings, EntryStore(table, prefix + b"w|"), window_len_ns)  # type: ignore[arg-type]
        self.rollup = RollupBook(self.book, PartsStore(table, prefix + b"p|"))  # type: ignore[arg-type]
        self.keep_ns = keep_ns  # how long past the horizon to keep windows (queries)
        self.last_evict_ns: int | None = None
        self.marker = _Announcer(window_len_ns)
        self.book.rebuild_index()

    @property
    def window_len_ns(self) -> int:
        return self.book.window_len_ns

    @property
    def has_open_windows(self) -> bool:
        return self.book.has_open_windows

    def _abort(self, mark: int) -> None:
        self.table.discard()
        self.book.rebuild_index()

    def take_marker(self) -> int | None:
        """The watermark to tell the stage above, after this call's window records."""
        return self.marker.take(self.watermark_ns)

    @_unit
    def on_window(self, part: Emission, offset: int = -1) -> list[Emission]:
        """A window record of the stage below (any revision): new revisions of emitted
        windows it changes, and the window it makes if the watermark has passed its end
        already (a late part in a window that had none: closed at once, as the 1 s stage
        does with a late event's window)."""
        if part.acc.window_len_ns != self.inner_len_ns:
            raise ValueError(f"a {part.acc.window_len_ns} ns window is no part of this stage's "
                             f"{self.window_len_ns} ns windows")
        self.book.offset = offset
        return (self.rollup.add_part(part, self.watermark_ns)
                + self.rollup.close_for(self.watermark_ns))

    @_unit
    def on_watermark(self, watermark_ns: int, offset: int = -1, committed: int | None = None
                     ) -> list[Emission]:
        """A watermark marker: every window it passes closes (the markers of one partition
        never move back; an older one, read again, changes nothing). ``committed``: the
        input offset the group has committed (windows emitted at or past it are kept)."""
        if self.watermark_ns is not None and watermark_ns <= self.watermark_ns:
            return []
        self.book.offset = offset
        self.watermark_ns = watermark_ns
        self.table[self.clock_key] = table_json(watermark_ns)
        closed = self.rollup.close_for(watermark_ns)
        if self.last_evict_ns is None or watermark_ns - self.last_evict_ns >= EVICT_EVERY_NS:
            self._evict(watermark_ns, committed)
            self.last_evict_ns = watermark_ns
        return closed

    @_unit
    def replay_outputs(self, committed: int) -> list[Emission]:
        """After an assignment: the windows emitted while processing input offsets at or
        past ``committed`` again, as :meth:`PartitionWindows.replay_outputs` does."""
        self.marker.forget()
        return _emitted_since(self.book, committed)

    def _evict(self, watermark_ns: int, committed: int | None) -> None:
        """Drop windows past horizon + query retention whose records have landed, and parts
        past the horizon (their windows can no longer be revised: SEMANTICS.md section 4;
        a part read again for one of them is ignored, RollupBook.add_part)."""
        for key in self.book.evictable(watermark_ns - self.keep_ns, committed):
            del self.book.store[key]
        frozen_before = watermark_ns - self.book.settings.horizon_ns
        length = self.window_len_ns
        for key in list(self.rollup.parts):
            if window_start_ns(key[1], length) + length <= frozen_before:
                del self.rollup.parts[key]

    def windows_of(self, volume_id: str, from_ns: int, to_ns: int) -> list[WindowEntry]:
        """The stored windows of one volume starting in [from_ns, to_ns), for queries."""
        return _windows_of(self.book, volume_id, from_ns, to_ns)


def _emitted_since(book: WindowBook, committed: int) -> list[Emission]:
    """Each window emitted at or past input offset ``committed``, at its last revision."""
    return [Emission(volume_id, entry.tenant_id, entry.acc, entry.revision - 1,
                     entry.emitted_offset)
            for (volume_id, _), entry in book.store.items()
            if entry.emitted and entry.emitted_offset >= committed]


def _windows_of(book: WindowBook, volume_id: str, from_ns: int, to_ns: int
                ) -> list[WindowEntry]:
    length_ns = book.window_len_ns
    first = -(-from_ns // length_ns) * length_ns  # the first window start >= from_ns
    if to_ns <= first:
        return []
    if (to_ns - first) // length_ns <= DIRECT_LOOKUPS_MAX:  # cheaper than a key scan
        found = (book.store.get((volume_id, start)) for start in range(first, to_ns, length_ns))
        return [entry for entry in found if entry is not None]
    keys = sorted(k for k in book.store if k[0] == volume_id and from_ns <= k[1] < to_ns)
    return [book.store[k] for k in keys]


class WindowChain:
    """The three stages of one partition in one process, as the worker's agents run them
    over the topics: what one stage publishes (window records, then a watermark marker)
    is fed in order to the stage above, at the next offsets of an imagined topic.

    For the pure tests, the audit's and the bench's in-process runs: the worker itself
    connects the stages through ``ioacct.stats.1s`` and ``ioacct.stats.1m`` (app.py)."""

    def __init__(self, partition: int, table: Table, settings: WindowSettings,
                 keep_ns: Sequence[int] = (0, 0, 0), retention_ns: int | None = None,
                 journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> None:
        self.windows = PartitionWindows(partition, table, settings, keep_ns, retention_ns,
                                        journal_chunk_bytes)
        self.rollups = [RollupWindows(partition, table, settings, WINDOW_LENGTHS_NS[n],
                                      WINDOW_LENGTHS_NS[n + 1], keep_ns[n + 1], journal_chunk_bytes)
                        for n in (0, 1)]
        self.topic_ends = [0, 0]  # the next offset of each imagined stats topic

    @property
    def books(self) -> list[WindowBook]:
        return [self.windows.books[0]] + [r.book for r in self.rollups]

    @property
    def needs_ticks(self) -> bool:
        return self.windows.needs_ticks or any(r.has_open_windows for r in self.rollups)

    def take_billing(self) -> list[BillingRecord]:
        return self.windows.take_billing()

    def on_events(self, *args: Any, **kwargs: Any) -> list[Emission]:
        return self._up(self.windows.on_events(*args, **kwargs))

    def on_tick(self, wall_ns: int, offset: int = -1) -> list[Emission]:
        return self._up(self.windows.on_tick(wall_ns, offset))

    def replay_outputs(self, committed: int) -> list[Emission]:
        return self._up(self.windows.replay_outputs(committed))

    def _up(self, emissions: list[Emission]) -> list[Emission]:
        out = list(emissions)
        marker = self.windows.take_marker()
        for n, stage in enumerate(self.rollups):
            made: list[Emission] = []
            for emission in emissions:
                made += stage.on_window(emission, self.topic_ends[n])
                self.topic_ends[n] += 1
            if marker is not None:
                made += stage.on_watermark(marker, self.topic_ends[n])
                self.topic_ends[n] += 1
            out += made
            emissions, marker = made, stage.take_marker()
        return out

    def windows_of(self, volume_id: str, length_ns: int, from_ns: int, to_ns: int
                   ) -> list[WindowEntry]:
        if length_ns == NS_PER_S:
            return self.windows.windows_of(volume_id, length_ns, from_ns, to_ns)
        stage = self.rollups[WINDOW_LENGTHS_NS.index(length_ns) - 1]
        return stage.windows_of(volume_id, from_ns, to_ns)
