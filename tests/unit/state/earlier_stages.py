"""The window stages of earlier versions, kept to write the tables their upgrades read.

Until session 30 a rollup stage of its own (:class:`RollupWindows`) made the 1 h windows
from the records of ``ioacct.stats.1m`` that the rollup-1h agent read (and, until session
14, the 1 m windows from ``ioacct.stats.1s``); the accounting stage
(:class:`MinutesOnlyWindows`, PartitionWindows as it was) made the 1 s and 1 m windows
only. Today's ``PartitionWindows`` makes all three in one unit and takes such a table
over (``PartitionWindows._upgrade_rollup``); the tests write one with these, as it was,
to hold the upgrade to what a table that never was upgraded gives.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streams.core.counters import table_json
from streams.core.times import MINUTE_NS
from streams.core.windows.acc import window_start_ns
from streams.core.windows.book import (
    Emission,
    RollupBook,
    WindowBook,
    WindowEntry,
    WindowKey,
    WindowSettings,
)
from streams.core.windows.ranges import entries_between
from streams.core.windows.stages import (
    EVICT_EVERY_NS,
    PartitionWindows,
    UnitTable,
    _adopt,
    _Announcer,
    _emitted_since,
    _Stage,
    _unit,
    _windows_of,
    partition_prefix,
    rollup_prefix,
)
from streams.core.windows.stores import EntryStore, PartsStore
from streams.state.journal import JOURNAL_CHUNK_BYTES, JournaledTable

Table = MutableMapping[bytes, bytes]


@dataclass
class TopicRollupBook(RollupBook):
    """A :class:`RollupBook` whose parts were records read from a stats topic: each kept
    on its own, read again after a crash or sent again (so a replay check per part)."""

    _evict_parts_from_ns: int | None = None  # as WindowBook._evict_from_ns, for the parts

    def rebuild_index(self) -> None:
        self._evict_parts_from_ns = None
        self.inner.rebuild_index()

    def evict_parts(self, watermark_ns: int) -> int:
        """Drop the parts of windows past the horizon (they can no longer be revised:
        SEMANTICS.md section 4; a part read again for one of them is ignored,
        :meth:`add_part`); returns how many. Reads only the parts it drops."""
        frozen_before = self.inner._frozen_before_ns(watermark_ns)
        assert frozen_before is not None
        # a part's window ends by frozen_before iff the part starts before this
        end_ns = window_start_ns(frozen_before, self.inner.window_len_ns)
        keys = [key for key, _ in entries_between(self.parts, self._evict_parts_from_ns, end_ns)]
        for key in keys:
            del self.parts[key]
        if self._evict_parts_from_ns is None or end_ns > self._evict_parts_from_ns:
            self._evict_parts_from_ns = end_ns
        return len(keys)

    def add_part(self, emission: Emission, watermark_ns: int | None = None, offset: int = -1
                 ) -> list[Emission]:
        """Take a part unless a revision of it as new or newer is in already (a record read
        again after a crash, or sent again: it changes nothing, and emits nothing). A newer
        revision replaces the earlier whole; an emitted window then gets a new revision.

        Each part is kept on its own (one small write per part, not the window's sixty
        rewritten each time); a new part is merged into the window, a revised one makes
        the window again from all its parts (a minimum cannot be taken back). ``offset``:
        the input offset being processed, stamped on what it emits.

        No horizon check: a part is only revised while it is within the horizon,
        and the window that holds it ends no earlier, so it is revisable too.
        """
        length = self.inner.window_len_ns
        part = emission.acc
        start = window_start_ns(part.window_start_ns, length)
        frozen_before = self.inner._frozen_before_ns(watermark_ns)
        if frozen_before is not None and start + length <= frozen_before:
            # Past the horizon: no part of this window is new (the stage below stops making
            # them before this stage's watermark gets there), so this is a record read or
            # sent again, whose part may be evicted already: taking it would count it twice.
            return []
        key = (emission.volume_id, part.window_start_ns)
        held = self.parts.get(key)
        if held is not None and held[0] >= emission.revision:
            return []
        self.parts[key] = (emission.revision, part)
        return self._update(emission.volume_id, emission.tenant_id, start,
                            [part] if held is None else None, part.window_len_ns, offset)


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
        self.rollup = TopicRollupBook(self.book, parts)  # type: ignore[arg-type]
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


def open_rollup_windows(partition: int, table: Table, settings: WindowSettings,
                        inner_len_ns: int, window_len_ns: int, keep_ns: int = 0,
                        journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> RollupWindows:
    """The rollup stage of ``window_len_ns`` of ``partition`` over ``table``."""
    journaled = JournaledTable(table, rollup_prefix(partition, window_len_ns) + b"journal",
                               journal_chunk_bytes)
    return RollupWindows(partition, journaled, settings, inner_len_ns, window_len_ns, keep_ns)


class MinutesOnlyWindows(PartitionWindows):
    """The accounting stage before session 30: 1 s and 1 m windows, no 1 h ones (nor an
    upgrade of them); a 1 m window stayed for its query retention, whatever its hour."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.books, self.rollups = self.books[:2], self.rollups[:1]

    def _upgrade_rollups(self) -> list[list[WindowKey]]:
        return [self._upgrade_rollup(1)]


def open_minutes_only(partition: int, table: Table, settings: WindowSettings,
                      keep_ns: Sequence[int] = (0, 0, 0)) -> MinutesOnlyWindows:
    """``open_partition_windows`` as it was before session 30 (the 1 m stage of before
    session 14 had a journal of its own)."""
    journaled = JournaledTable(table, partition_prefix(partition) + b"journal",
                               JOURNAL_CHUNK_BYTES)
    older = JournaledTable(table, rollup_prefix(partition, MINUTE_NS) + b"journal",
                           JOURNAL_CHUNK_BYTES)
    journaled.pending.update(older.pending)
    return MinutesOnlyWindows(partition, journaled, settings, keep_ns)


def topic_fed(stage: RollupWindows, topic: Sequence[Emission | int], first: int
              ) -> list[Emission]:
    """Records of the stats topic below (windows and watermark markers), from offset
    ``first``, into ``stage`` one by one, as its rollup agent read them: what it made."""
    made: list[Emission] = []
    for offset, record in enumerate(topic, first):
        if isinstance(record, Emission):
            made += stage.on_window(record, offset)
        else:
            made += stage.on_watermark(record, offset)
    return made


def lagging_stage(topic: Sequence[Emission | int], settings: WindowSettings, inner_len_ns: int,
                  window_len_ns: int, lag: int, cut: bool
                  ) -> tuple[dict[bytes, bytes], list[Emission]]:
    """The table of a rollup stage of its own (partition 0) that has read all of ``topic``
    but its last ``lag`` records (``cut``: its last unit's journal landed and none of its
    writes), and what it published. (A stage that had read nothing has no key to tell it
    was there: the upgrade needs one, PartitionWindows._upgrade_rollup.)"""
    table: dict[bytes, bytes] = {}
    stage = open_rollup_windows(0, table, settings, inner_len_ns, window_len_ns)
    read = topic[:len(topic) - lag]
    made: list[Emission] = []
    before = dict(table)
    for offset, record in enumerate(read):
        before = dict(table)
        made += topic_fed(stage, [record], offset)
    if cut and read:
        table = {**before, **{k: v for k, v in table.items() if b"journal" in k}}
    return table, made
