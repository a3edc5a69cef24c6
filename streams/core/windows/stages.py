"""The window stages of one partition, kept in a bytes table (a Faust table).

Pure logic: no faust, no aiokafka. The worker keeps, per partition it owns, one
:class:`PartitionWindows` (the accounting agent's stage: the clock, the 1 s
windows, their 1 m rollup, billing) and one :class:`RollupWindows` (the rollup
agent's stage: 1 h windows from the records of ``ioacct.stats.1m``, closed by the
watermark markers between them). The 1 m windows are made in the unit that emits
their 1 s parts, from the 1 s windows the stage stores already (no copy of them, no
round trip through ``ioacct.stats.1s``). Every state change goes through
the table, so its changelog can rebuild it after a crash or a rebalance. Keys
carry the partition and the stage, so a rebuild finds its own.

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
from streams.core.times import MINUTE_NS, NS_PER_S
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
    EntryStore,
    PartsStore,
    RowsEntryStore,
    SeqStore,
    StartOrderedStore,
)

EVICT_EVERY_NS = 60 * NS_PER_S
# What a partition's 1 m stage kept besides its windows when it was a stage of its own, fed
# through ioacct.stats.1s (before session 14): its parts (both layouts), clock and journal.
OLDER_MINUTE_KEYS = (b"P|", b"p|", b"clock", b"journal")
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
    """The clock, the 1 s and 1 m windows and the billing hours of one raw partition:
    the accounting agent's stage. Window records (1 s, then 1 m) are returned; billing
    records wait in :meth:`take_billing`, the watermark markers in :meth:`take_marker`
    (``ioacct.stats.1s``) and :meth:`take_minute_marker` (for the 1 h stage).

    A 1 m window is the rollup of the 1 s windows of its minute as emitted, made in the
    same unit as they are (:meth:`RollupBook.add_emitted`): its parts are this stage's
    own 1 s windows (:class:`EmittedParts`), which are kept until their minute is past
    the revision horizon.

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
        self.minute_prefix = rollup_prefix(partition, MINUTE_NS)  # the keys of before
        minutes = RowsEntryStore(table, self.minute_prefix + b"W|")
        self.stores = [entries, billing, minutes]
        # where a changelog written before session 10 keeps them (stores.py)
        self.older_layout = [(entries, prefix + b"w%d|" % NS_PER_S), (billing, prefix + b"b|"),
                             (minutes, self.minute_prefix + b"w|")]
        self.books: list[WindowBook] = [ColumnarBook(settings, entries, NS_PER_S)]  # type: ignore[arg-type]
        self.minutes = RollupBook(ColumnarBook(settings, minutes, MINUTE_NS),  # type: ignore[arg-type]
                                  EmittedParts(entries))  # type: ignore[arg-type]
        self.keep_ns = keep_ns[0]  # how long past the horizon to keep 1 s windows (queries)
        self.minute_keep_ns = keep_ns[1]  # and 1 m windows
        self.billing = BillingBook(billing)  # type: ignore[arg-type]
        self.adopted = _adopt(self.older_layout)
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
        self.minute_marker = _Announcer(MINUTE_NS)
        self.books[0].rebuild_index()
        self.minutes.rebuild_index()
        self.minutes_to_revise = self._upgrade_minutes()

    def _mark(self) -> int:
        return len(self.billing_out)

    def _abort(self, mark: int) -> None:
        """A unit failed half-way: forget its writes, and the indexes and billing records
        it made from them."""
        self._forget_unit()
        _adopt(self.older_layout)  # the discarded writes held the moves, if any
        del self.billing_out[mark:]
        self.books[0].rebuild_index()
        self.minutes.rebuild_index()
        self.billing.rebuild_index()
        self.minutes_to_revise = self._upgrade_minutes()  # and the upgrade's, if any

    def _upgrade_minutes(self) -> list[WindowKey]:
        """A changelog written before session 14, when the 1 m windows were a stage of their
        own fed through ``ioacct.stats.1s``: its parts, clock and journal are dropped (a
        unit its journal had to redo was taken in by :func:`open_partition_windows`), and
        each minute that can still change is made again from the 1 s windows stored here
        (that stage may not have read them all). A part it holds whose 1 s window this
        stage has evicted already (the earlier design evicted 1 s windows at the horizon,
        not at their minute's) is stored again as that window, emitted: it can no longer
        change, and its minute needs it. Writes land with the first unit; returns the
        emitted minutes that changed, which it revises (:meth:`_roll_up`)."""
        table, prefix = self.table, self.minute_prefix
        old_parts = PartsStore(table, prefix + b"P|")
        old_parts.adopt(prefix + b"p|")  # parts of before session 10, in the same place
        older = [key for sub in OLDER_MINUTE_KEYS
                 for key, _ in table_items_between(table, prefix + sub, prefix_end(prefix + sub))]
        if not older:
            return []
        book, seconds = self.minutes.inner, self.books[0].store
        frozen = book._frozen_before_ns(self.clock.watermark_ns)
        lo = None if frozen is None else window_start_ns(frozen, MINUTE_NS)  # may change
        for (volume_id, start), held in list(old_parts.items()):
            minute = book.store.get((volume_id, window_start_ns(start, MINUTE_NS)))
            if (lo is None or start >= lo) and minute is not None \
                    and (volume_id, start) not in seconds:
                part: Part = held  # type: ignore[assignment]
                seconds[(volume_id, start)] = WindowEntry(minute.tenant_id, part[1], part[0] + 1,
                                                          True)
        for key in older:
            del table[key]
        parts: dict[WindowKey, tuple[str, list[WindowAcc]]] = {}
        for (volume_id, start), window in entries_between(seconds, lo, None):
            if window.emitted:
                minute_key = (volume_id, window_start_ns(start, MINUTE_NS))
                parts.setdefault(minute_key, (window.tenant_id, []))[1].append(window.acc)
        changed: list[WindowKey] = []
        for (volume_id, start), (tenant_id, accs) in sorted(parts.items()):
            made = rollup(accs, MINUTE_NS)
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
        """Whether wall-clock ticks can still close something here (the stages above are
        asked by the worker: their clock is this one's markers)."""
        return (self.billing.has_open_hours or self.books[0].has_open_windows
                or self.minutes.inner.has_open_windows)

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
        emissions = (_emitted_since(self.books[0], committed)
                     + _emitted_since(self.minutes.inner, committed))
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
        """This unit's 1 s emissions, then the 1 m ones they and the watermark make."""
        minutes = self.minutes
        made = minutes.add_emitted(emitted, offset)
        revised = {(e.volume_id, e.acc.window_start_ns) for e in made}
        made += [minutes.inner._revise(volume_id, minutes.inner.store[(volume_id, start)], offset)
                 for volume_id, start in self.minutes_to_revise
                 if (volume_id, start) not in revised]  # after an upgrade (first unit)
        self.minutes_to_revise = []
        return emitted + made + minutes.close_for(self.clock.watermark_ns, offset)

    def _close(self, offset: int) -> list[Emission]:
        closed = self.books[0].close_for(self.clock.watermark_ns, offset)
        self.billing_out += self.billing.close_for(self.clock.watermark_ns, offset)
        clock = table_json([self.clock.watermark_ns, self.clock.last_input_wall_ns])
        if self.table.get(self.clock_key) != clock:
            self.table[self.clock_key] = clock
        return closed

    def _evict(self, committed: int | None) -> None:
        """Drop windows past horizon + query retention whose records have landed; a 1 s
        window stays while its minute can change (it is a part of it)."""
        watermark = self.clock.watermark_ns
        if watermark is None:
            return
        horizon_ns = self.books[0].settings.horizon_ns
        minute_open_ns = window_start_ns(watermark - horizon_ns, MINUTE_NS) + horizon_ns
        self.books[0].evict(min(watermark - self.keep_ns, minute_open_ns), committed)
        self.minutes.inner.evict(watermark - self.minute_keep_ns, committed)

    def windows_of(self, volume_id: str, length_ns: int, from_ns: int, to_ns: int
                   ) -> list[WindowEntry]:
        """The stored 1 s or 1 m windows of one volume starting in [from_ns, to_ns), for
        queries."""
        books = {NS_PER_S: self.books[0], MINUTE_NS: self.minutes.inner}
        if length_ns not in books:
            raise ValueError(f"this stage keeps 1 s and 1 m windows, not {length_ns} ns")
        return _windows_of(books[length_ns], volume_id, from_ns, to_ns)


# A record of a rollup stage's input partition, and its offset: a window of the stage
# below, or a watermark marker.
RollupInput = tuple[Emission | int, int]


class RollupWindows(_Stage):
    """One rollup stage of one partition: the windows of ``window_len_ns`` built from the
    window records of ``inner_len_ns`` that the stage below published to its topic, in the
    order of that topic's partition, with the watermark markers between them.

    A rollup agent feeds :meth:`on_inputs` the records it reads, many at a time (or
    :meth:`on_window` and :meth:`on_watermark` one by one: the same outputs and table;
    ``offset``: the record's offset, stamped on what it makes, for
    :meth:`replay_outputs`); each call is a unit of a :class:`JournaledTable` of its own.
    A record read again (after a crash, or sent again by the stage below) changes
    nothing: a part is only taken when its revision is newer (:class:`RollupBook`)."""

    def __init__(self, partition: int, table: UnitTable, settings: WindowSettings,
                 inner_len_ns: int, window_len_ns: int, keep_ns: int = 0) -> None:
        prefix = rollup_prefix(partition, window_len_ns)
        self.table = table  # journaled, as PartitionWindows' table
        self.inner_len_ns = inner_len_ns
        self.clock_key = prefix + b"clock"
        self.watermark_ns: int | None = (orjson.loads(table[self.clock_key])
                                         if self.clock_key in table else None)
        entries, parts = EntryStore(table, prefix + b"W|"), PartsStore(table, prefix + b"P|")
        self.stores = [entries, parts]
        self.older_layout = [(entries, prefix + b"w|"), (parts, prefix + b"p|")]  # as above
        self.book = WindowBook(settings, entries, window_len_ns)  # type: ignore[arg-type]
        self.rollup = RollupBook(self.book, parts)  # type: ignore[arg-type]
        self.adopted = _adopt(self.older_layout)
        self.keep_ns = keep_ns  # how long past the horizon to keep windows (queries)
        self.last_evict_ns: int | None = None
        self.marker = _Announcer(window_len_ns)
        self.rollup.rebuild_index()

    @property
    def window_len_ns(self) -> int:
        return self.book.window_len_ns

    @property
    def has_open_windows(self) -> bool:
        return self.book.has_open_windows

    def _abort(self, mark: int) -> None:
        self._forget_unit()
        _adopt(self.older_layout)
        self.rollup.rebuild_index()

    def take_marker(self) -> int | None:
        """The watermark to tell the stage above, after this call's window records."""
        return self.marker.take(self.watermark_ns)

    @_unit
    def on_inputs(self, inputs: Sequence[RollupInput], committed: int | None = None
                  ) -> list[tuple[list[Emission], int | None]]:
        """Many records of the input partition, in their order, as one unit (the rollup
        agent's step): per record, what :meth:`on_window` or :meth:`on_watermark` would make
        of it and the marker :meth:`take_marker` would give after it. The table ends as
        those calls one by one would leave it; its writes land all or none. ``committed``:
        as for :meth:`on_watermark` (the group commits between steps, not within one)."""
        out: list[tuple[list[Emission], int | None]] = []
        for record, offset in inputs:
            if isinstance(record, Emission):
                made = self._window(record, offset)
            else:
                made = self._watermark(record, offset, committed)
            out.append((made, self.take_marker()))
        return out

    @_unit
    def on_window(self, part: Emission, offset: int = -1) -> list[Emission]:
        """A window record of the stage below (any revision): new revisions of emitted
        windows it changes, and the window it makes if the watermark has passed its end
        already (a late part in a window that had none: closed at once, as the 1 s stage
        does with a late event's window)."""
        return self._window(part, offset)

    def _window(self, part: Emission, offset: int) -> list[Emission]:
        if part.acc.window_len_ns != self.inner_len_ns:
            raise ValueError(f"a {part.acc.window_len_ns} ns window is no part of this stage's "
                             f"{self.window_len_ns} ns windows")
        return (self.rollup.add_part(part, self.watermark_ns, offset)
                + self.rollup.close_for(self.watermark_ns, offset))

    @_unit
    def on_watermark(self, watermark_ns: int, offset: int = -1, committed: int | None = None
                     ) -> list[Emission]:
        """A watermark marker: every window it passes closes (the markers of one partition
        never move back; an older one, read again, changes nothing). ``committed``: the
        input offset the group has committed (windows emitted at or past it are kept)."""
        return self._watermark(watermark_ns, offset, committed)

    def _watermark(self, watermark_ns: int, offset: int, committed: int | None
                   ) -> list[Emission]:
        if self.watermark_ns is not None and watermark_ns <= self.watermark_ns:
            return []
        self.watermark_ns = watermark_ns
        self.table[self.clock_key] = table_json(watermark_ns)
        closed = self.rollup.close_for(watermark_ns, offset)
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
        self.book.evict(watermark_ns - self.keep_ns, committed)
        self.rollup.evict_parts(watermark_ns)

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
    # a long range: the stored windows of every volume over it, in start order
    return [entry for (volume, _), entry in entries_between(book.store, first, to_ns)
            if volume == volume_id]


def _adopt(older_layout: Sequence[tuple[StartOrderedStore, bytes]]) -> int:
    """A changelog written before session 10: the stores' entries under their earlier
    prefixes, moved to their start-ordered keys (stores.py); the moves land with the next
    unit (a stage is built outside one); returns how many."""
    return sum(store.adopt(old_prefix) for store, old_prefix in older_layout)
