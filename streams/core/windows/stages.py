"""The window stages of one partition, kept in a bytes table (a Faust table).

Pure logic: no faust, no aiokafka. The worker keeps, per partition it owns, one
:class:`PartitionWindows`: the accounting agent's stage, with the clock, the 1 s
windows, their 1 m and 1 h rollups and billing. A rollup is made in the unit that emits
its parts, from the windows one length down that the stage stores already (no copy of
them, no round trip through a stats topic): the 1 m windows since session 14, the 1 h
ones since session 30 (before, a rollup agent read them from ``ioacct.stats.1m``).
Every state change goes through the table, so its changelog can rebuild it after a
crash or a rebalance. Keys carry the partition and the stage, so a rebuild finds its
own.

Each public call that changes the state (a record's events, a Tick, the replay of
outputs) is one unit: the stage commits its table at the end (a :class:`UnitTable`,
in the worker ``streams.state.journal.JournaledTable``), which lands the writes all
or none as seen by the next owner. ``streams.state.stages`` opens stages that way.
"""

from __future__ import annotations

import functools
import re
from abc import abstractmethod
from collections.abc import Callable, MutableMapping, Sequence
from typing import Concatenate, ParamSpec, TypeVar

import orjson

from streams.core.batch import Columns, EventBatch
from streams.core.billing import BillingBook, BillingRecord
from streams.core.counters import table_json
from streams.core.times import HOUR_NS, MINUTE_NS, NS_PER_S
from streams.core.windows.acc import WindowAcc, rollup, window_start_ns
from streams.core.windows.book import (
    Emission,
    EmittedParts,
    Part,
    PartitionClock,
    Parts,
    ProducedColumns,
    RollupBook,
    WindowBook,
    WindowEntry,
    WindowKey,
    WindowSettings,
    unapplied,
    unapplied_parts,
)
from streams.core.windows.columnar import ColumnarBook
from streams.core.windows.ranges import entries_between, prefix_end, table_items_between
from streams.core.windows.stores import (
    BillingStore,
    PartsStore,
    RowsEntryStore,
    SeqStore,
    StartOrderedStore,
)

EVICT_EVERY_NS = 60 * NS_PER_S
# What a partition's 1 m stage (before session 14) and 1 h stage (before session 30) kept
# besides their windows when each was a stage of its own, fed through the stats topic one
# length down: its parts (both layouts), clock and journal.
OLDER_ROLLUP_KEYS = (b"P|", b"p|", b"clock", b"journal")
_WINDOW_1S_KEY = re.compile(rb"\d+\|W1\|")  # partition_prefix + PartitionWindows' tag
DIRECT_LOOKUPS_MAX = 10_000  # windows_of: look each start up, up to this many, else scan


class UnitTable(MutableMapping[bytes, bytes]):
    """A bytes table whose writes wait for :meth:`commit`, which lands them all or none
    (``streams.state.journal.JournaledTable``); :meth:`discard` forgets them."""

    @abstractmethod
    def commit(self) -> int:
        """Land the pending writes as one unit; returns how many were written."""

    @abstractmethod
    def discard(self) -> None:
        """Forget the pending writes (a unit that failed half-way)."""


def partition_prefix(partition: int) -> bytes:
    """The key prefix of a partition's accounting stage (its journal: prefix + journal)."""
    return b"%d|" % partition


def is_window_1s_key(key: bytes) -> bool:
    """Whether a table key is a stored 1 s window's (the bench counts them)."""
    return _WINDOW_1S_KEY.match(key) is not None


def rollup_prefix(partition: int, window_len_ns: int) -> bytes:
    """The key prefix of a partition's rollup stage of ``window_len_ns``."""
    return b"%d|r%d|" % (partition, window_len_ns // NS_PER_S)


class _Stage:
    """What :func:`_unit` needs of a stage: its table, whose writes land at the unit's
    end, the stores that keep a unit's writes as objects until then (stores.py), and how
    to undo a unit's effects outside the table."""

    table: UnitTable
    stores: list[StartOrderedStore]

    def _mark(self) -> int:
        return 0

    def _end_unit(self) -> None:
        for store in self.stores:
            store.write_back()
        self.table.commit()

    def _abort(self, mark: int) -> None:
        self._forget_unit()

    def _forget_unit(self) -> None:
        """The writes of a unit that failed half-way: the stores' first (a scan would write
        them back), then the table's."""
        for store in self.stores:
            store.forget_unwritten()
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
        self._end_unit()
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
    """The clock, the 1 s, 1 m and 1 h windows and the billing hours of one raw
    partition: the accounting agent's stage. Window records (1 s, then 1 m, then 1 h) are
    returned; billing records wait in :meth:`take_billing`, the watermark markers in
    :meth:`take_marker` (``ioacct.stats.1s``) and :meth:`take_minute_marker`
    (``ioacct.stats.1m``), for their readers.

    A rollup window (1 m, 1 h) is the rollup of the windows one length down as emitted,
    made in the same unit as they are (:meth:`RollupBook.add_emitted`): its parts are this
    stage's own windows (:class:`EmittedParts`), which are kept until the rollup window
    that holds them is past the revision horizon.

    Every public call that changes them (:meth:`on_events`, :meth:`on_tick`,
    :meth:`replay_outputs`) is a unit of the :class:`JournaledTable` in front of the
    table: after a crash the next owner sees either all of its writes or none."""

    def __init__(self, partition: int, table: UnitTable, settings: WindowSettings,
                 keep_ns: Sequence[int] = (0, 0, 0), retention_ns: int | None = None) -> None:
        prefix = partition_prefix(partition)
        self.table = table  # journaled: its last unit redone already if a crash cut it
        self.clock_key = prefix + b"clock"
        self.clock = PartitionClock(settings.grace_ns, settings.idle_timeout_ns)
        if self.clock_key in table:
            self.clock.watermark_ns, self.clock.last_input_wall_ns = orjson.loads(
                table[self.clock_key])
        entries = RowsEntryStore(table, prefix + b"W1|")
        billing = BillingStore(table, prefix + b"B|")
        # the keys of the rollup stages of before (sessions 14 and 30), read as they were
        self.rollup_prefixes = (rollup_prefix(partition, MINUTE_NS),
                                rollup_prefix(partition, HOUR_NS))
        minutes = RowsEntryStore(table, self.rollup_prefixes[0] + b"W|")
        hours = RowsEntryStore(table, self.rollup_prefixes[1] + b"W|")
        self.stores = [entries, billing, minutes, hours]
        # where a changelog written before session 10 keeps them (stores.py)
        self.older_layout = [(entries, prefix + b"w%d|" % NS_PER_S), (billing, prefix + b"b|"),
                             (minutes, self.rollup_prefixes[0] + b"w|"),
                             (hours, self.rollup_prefixes[1] + b"w|")]
        seconds = ColumnarBook(settings, entries, NS_PER_S)  # type: ignore[arg-type]
        self.minutes = RollupBook(ColumnarBook(settings, minutes, MINUTE_NS,  # type: ignore[arg-type]
                                               knows_new=False),
                                  EmittedParts(entries))  # type: ignore[arg-type]
        self.hours = RollupBook(ColumnarBook(settings, hours, HOUR_NS,  # type: ignore[arg-type]
                                             knows_new=False),
                                EmittedParts(minutes))  # type: ignore[arg-type]
        # the books of 1 s, 1 m and 1 h windows; each rollup's parts are the book before it
        self.books: list[WindowBook] = [seconds, self.minutes.inner, self.hours.inner]
        self.rollups = [self.minutes, self.hours]
        self.keep_ns = tuple(keep_ns)  # per length, how long past the horizon to keep windows
        self.billing = BillingBook(billing)  # type: ignore[arg-type]
        self.adopted = _adopt(self.older_layout)
        # The windows' own replay check: the counters table has one too, but it is another
        # changelog topic, and a crash can land one table's writes without the other's.
        # Written in the unit of the record's events, so it landed if and only if they did;
        # it also skips a producer's duplicate of a record, at another offset.
        self.applied = SeqStore(table, prefix + b"q|")
        self.retention_ns = retention_ns  # billing hours are kept while events can reach them
        self.billing_out: list[BillingRecord] = []
        self.last_evict_wall_ns = -EVICT_EVERY_NS
        self.marker = _Announcer(NS_PER_S)
        self.minute_marker = _Announcer(MINUTE_NS)
        self._rebuild_indexes()
        self.to_revise = self._upgrade_rollups()

    def _rebuild_indexes(self) -> None:
        for book in self.books:
            book.rebuild_index()
        self.billing.rebuild_index()

    def _mark(self) -> int:
        return len(self.billing_out)

    def _abort(self, mark: int) -> None:
        """A unit failed half-way: forget its writes, and the indexes and billing records
        it made from them."""
        self._forget_unit()
        _adopt(self.older_layout)  # the discarded writes held the moves, if any
        del self.billing_out[mark:]
        self._rebuild_indexes()
        self.to_revise = self._upgrade_rollups()  # and the upgrade's, if any

    def _upgrade_rollups(self) -> list[list[WindowKey]]:
        """A changelog written when the 1 m windows (before session 14) or the 1 h ones
        (before session 30) were a stage of their own: per rollup length, the emitted
        windows :meth:`_upgrade_rollup` changed, which the first unit revises
        (:meth:`_roll_up`)."""
        return [self._upgrade_rollup(n) for n in range(1, len(self.rollups) + 1)]

    def _upgrade_rollup(self, n: int) -> list[WindowKey]:
        """The rollup of ``self.books[n]`` when it was a stage of its own, fed through the
        stats topic of ``self.books[n - 1]``: its parts, clock and journal are dropped (a
        unit its journal had to redo was taken in by :func:`open_partition_windows`), and
        each of its windows that can still change is made again from the windows one length
        down stored here (that stage may not have read them all). A part it holds whose
        window this stage has evicted already (the 1 s windows were evicted at the horizon
        before session 14, and 1 m ones at their query retention before session 30, not
        when their rollup window is) is stored again as that window, emitted: it can no
        longer change, and its rollup window needs it. Writes land with the first unit;
        returns the emitted windows that changed. (A rollup stage of its own that had read
        nothing left no key to tell it was there: its windows are made from the parts
        emitted from then on. The parts it had not read yet are found only while their
        windows are still stored: a worker upgraded while that agent lagged by more than
        the shorter windows' query retention loses them.)"""
        table, prefix = self.table, self.rollup_prefixes[n - 1]
        old_parts = PartsStore(table, prefix + b"P|")
        old_parts.adopt(prefix + b"p|")  # parts of before session 10, in the same place
        older = [key for sub in OLDER_ROLLUP_KEYS
                 for key, _ in table_items_between(table, prefix + sub, prefix_end(prefix + sub))]
        if not older:
            return []
        book, below = self.books[n], self.books[n - 1].store
        length = book.window_len_ns
        frozen = book._frozen_before_ns(self.clock.watermark_ns)
        lo = None if frozen is None else window_start_ns(frozen, length)  # may change
        for (volume_id, start), held in list(old_parts.items()):
            window = book.store.get((volume_id, window_start_ns(start, length)))
            if (lo is None or start >= lo) and window is not None \
                    and (volume_id, start) not in below:
                part: Part = held  # type: ignore[assignment]
                below[(volume_id, start)] = WindowEntry(window.tenant_id, part[1], part[0] + 1,
                                                        True)
        for old_key in older:
            del table[old_key]
        parts: dict[WindowKey, tuple[str, list[WindowAcc]]] = {}
        for (volume_id, start), window in entries_between(below, lo, None):
            if window.emitted:
                key = (volume_id, window_start_ns(start, length))
                parts.setdefault(key, (window.tenant_id, []))[1].append(window.acc)
        changed: list[WindowKey] = []
        for (volume_id, start), (tenant_id, accs) in sorted(parts.items()):
            made = rollup(accs, length)
            entry = book.store.get((volume_id, start))
            if entry is None:
                entry = book._entry(volume_id, tenant_id, start)
            elif entry.acc == made:
                continue
            entry.acc = made
            book.store[(volume_id, start)] = entry
            if entry.emitted:
                changed.append((volume_id, start))
        return changed

    def take_billing(self) -> list[BillingRecord]:
        """Billing records made since the last call: hours closed and adjustments."""
        out, self.billing_out = self.billing_out, []
        return out

    def take_marker(self) -> int | None:
        """The watermark to tell readers of ``ioacct.stats.1s``, after this call's 1 s
        window records: a second it passes has all its windows out (SEMANTICS.md section
        4), and it enters a new second."""
        return self.marker.take(self.clock.watermark_ns)

    def take_minute_marker(self) -> int | None:
        """The watermark to tell the 1 h stage, after this call's 1 m window records, when
        it enters a new minute."""
        return self.minute_marker.take(self.clock.watermark_ns)

    def on_events(
        self, batch: EventBatch, wall_ns: int, producer: tuple[str, int] | None = None,
        offset: int = -1,
    ) -> list[Emission]:
        """:meth:`on_columns` for one volume's events."""
        return self.on_columns(Columns.of_batch(batch), wall_ns, producer, offset)

    @_unit
    def on_columns(
        self, columns: Columns, wall_ns: int, producer: tuple[str, int] | None = None,
        offset: int = -1,
    ) -> list[Emission]:
        """Validated events of one record (any volumes); returns every window record to
        publish.

        ``producer`` = (producer_id, seq) of the record: a volume whose events these
        windows already hold (seq at or below the highest applied for the volume and
        producer) contributes nothing; the others are marked applied, in the same unit.
        ``offset``: the record's, stamped on what it makes."""
        return self._apply([(columns, producer)], wall_ns, offset)

    @_unit
    def on_records(self, records: Sequence[ProducedColumns], wall_ns: int, offset: int = -1
                   ) -> list[Emission]:
        """The validated events of many records, in their order, as one unit and one
        vectorised pass: each record's volumes are checked and marked as
        :meth:`on_columns` does (a record repeated within ``records`` counts once), then
        every surviving event sees the watermark from before the call. ``offset``: the
        last record's, stamped on what it makes (so a replay of outputs after a crash
        sends them again whichever of the records the committed offset points to)."""
        return self._apply(records, wall_ns, offset)

    @_unit
    def on_parts(self, parts: Parts, wall_ns: int, offset: int = -1) -> list[Emission]:
        """:meth:`on_records` for many records' parts as arrays (core/step.py)."""
        return self._apply_unapplied(*unapplied_parts(parts, self._applied_of), wall_ns,
                                     offset)

    def _applied_of(self, volume_id: str) -> dict[str, int] | None:
        return self.applied.get((volume_id, 0))  # type: ignore[return-value]

    def _apply(self, records: Sequence[ProducedColumns], wall_ns: int, offset: int
               ) -> list[Emission]:
        return self._apply_unapplied(*unapplied(records, self._applied_of), wall_ns, offset)

    def _apply_unapplied(self, columns: Columns, marks: dict[str, dict[str, int]],
                         wall_ns: int, offset: int) -> list[Emission]:
        if len(columns) == 0:
            return []
        self.billing_out += self.billing.add_columns(columns, offset)
        revised = self.books[0].add_columns(columns, self.clock.watermark_ns, offset)
        self.clock.on_input(int(columns.complete_ns.max()), wall_ns)
        emitted = revised + self._close(offset)
        for volume_id, seqs in marks.items():
            self.applied[(volume_id, 0)] = seqs
        return self._roll_up(emitted, offset)

    @property
    def needs_ticks(self) -> bool:
        """Whether wall-clock ticks can still close something here."""
        return self.billing.has_open_hours or any(book.has_open_windows for book in self.books)

    @_unit
    def on_tick(self, wall_ns: int, offset: int = -1, committed: int | None = None
                ) -> list[Emission]:
        """The wall clock moved: an idle partition's windows may close. ``committed``: the
        input offset the group has committed (windows emitted at or past it are kept)."""
        self.clock.on_wall_clock(wall_ns)
        emitted = self._roll_up(self._close(offset), offset)
        if wall_ns - self.last_evict_wall_ns >= EVICT_EVERY_NS:
            self._evict(committed)  # reads what it drops (and a seek): still not every tick
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
        self.minute_marker.forget()
        emissions = [e for book in self.books for e in _emitted_since(book, committed)]
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

    def _roll_up(self, emitted: list[Emission], offset: int) -> list[Emission]:
        """This unit's 1 s emissions, then the 1 m ones they and the watermark make, then
        the 1 h ones those make."""
        out = list(emitted)
        for n, rollup_book in enumerate(self.rollups, 1):
            made = rollup_book.add_emitted(emitted, offset)
            revised = {(e.volume_id, e.acc.window_start_ns) for e in made}
            inner = rollup_book.inner
            made += [inner._revise(volume_id, inner.store[(volume_id, start)], offset)
                     for volume_id, start in self.to_revise[n - 1]
                     if (volume_id, start) not in revised]  # after an upgrade (first unit)
            emitted = made + rollup_book.close_for(self.clock.watermark_ns, offset)
            out += emitted
        self.to_revise = [[] for _ in self.rollups]
        return out

    def _close(self, offset: int) -> list[Emission]:
        closed = self.books[0].close_for(self.clock.watermark_ns, offset)
        self.billing_out += self.billing.close_for(self.clock.watermark_ns, offset)
        clock = table_json([self.clock.watermark_ns, self.clock.last_input_wall_ns])
        if self.table.get(self.clock_key) != clock:
            self.table[self.clock_key] = clock
        return closed

    def _evict(self, committed: int | None) -> None:
        """Drop windows past horizon + query retention whose records have landed; a window
        stays while the rollup window that holds it can change (it is a part of it)."""
        watermark = self.clock.watermark_ns
        if watermark is None:
            return
        horizon_ns = self.books[0].settings.horizon_ns
        for n, book in enumerate(self.books):
            until = watermark - self.keep_ns[n]
            if n + 1 < len(self.books):  # its rollup window's start, past the horizon
                above = self.books[n + 1].window_len_ns
                until = min(until, window_start_ns(watermark - horizon_ns, above) + horizon_ns)
            book.evict(until, committed)

    def windows_of(self, volume_id: str, length_ns: int, from_ns: int, to_ns: int
                   ) -> list[WindowEntry]:
        """The stored 1 s, 1 m or 1 h windows of one volume starting in [from_ns, to_ns),
        for queries."""
        books = {book.window_len_ns: book for book in self.books}
        if length_ns not in books:
            raise ValueError(f"this stage keeps 1 s, 1 m and 1 h windows, not {length_ns} ns")
        return _windows_of(books[length_ns], volume_id, from_ns, to_ns)


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
    # a long range: the stored windows of every volume over it, in start order
    return [entry for (volume, _), entry in entries_between(book.store, first, to_ns)
            if volume == volume_id]


def _adopt(older_layout: Sequence[tuple[StartOrderedStore, bytes]]) -> int:
    """A changelog written before session 10: the stores' entries under their earlier
    prefixes, moved to their start-ordered keys (stores.py); the moves land with the next
    unit (a stage is built outside one); returns how many."""
    return sum(store.adopt(old_prefix) for store, old_prefix in older_layout)
