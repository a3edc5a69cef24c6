"""The accounting stage's windows (1 s, and their 1 m rollups) as numpy columns.

Pure logic: no faust, no aiokafka. :class:`ColumnarBook` is the :class:`WindowBook` of the
accounting stage's 1 s windows and of their minutes (stages.py) whose calls of a unit,
adding events (:meth:`ColumnarBook.add_columns`), adding rollup parts
(:meth:`ColumnarBook.add_parts`) and closing windows, never make a window an object: what
the events add (vector.partial_columns) or the parts sum to (columns.reduce_windows) is
merged into the touched windows read as columns (stores.RowsEntryStore.take_rows), the
windows the watermark passes are marked emitted, and the store keeps the results as columns
until the unit ends and packs them all at once (packed.pack_columns). Emissions carry their
windows' columns (book.EmittedRows): the encoder lays their records out from those, and
their objects are made only if something asks for one. On a fleet of many volumes a window
was ~300 µs of Python objects (docs/performance.md, sessions 21-22).

A batch the columns cannot hold exactly (a sum or latency outside int64, an older stored
window) takes :class:`WindowBook`'s way, one object a window, with the same results.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from streams.core.batch import Columns
from streams.core.closing import ClosingIndex
from streams.core.events import INT64_MIN
from streams.core.windows.book import Emission, EmittedRows, WindowBook, WindowKey, WindowRows
from streams.core.windows.columns import (
    WindowColumns,
    add_partial,
    concat,
    empty_windows,
    reduce_windows,
)
from streams.core.windows.stores import RowsEntryStore
from streams.core.windows.vector import frozen_window, inflight_from_ns, partial_columns

# WindowRows.cols.extra columns
_REVISION, _OFFSET, _EMITTED = range(3)
# Windows merged, closed and kept per call at most: a unit that reaches more (a tick that
# closes 100,000 volumes' windows) goes in chunks, so its arrays stay tens of MB, not GB.
CHUNK_WINDOWS = 4096


@dataclass
class ColumnarBook(WindowBook):
    """A :class:`WindowBook` over a :class:`RowsEntryStore` whose units work on columns.
    ``knows_new``: its index of open windows keeps each volume's last end, so that
    :meth:`add_columns` knows most new windows without reading the table (a dict entry per
    volume with an open window: the 1 s book's; the rollups' take their parts by
    :meth:`add_parts`, where nearly every window is stored already)."""

    knows_new: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.store, RowsEntryStore):
            raise TypeError("a ColumnarBook keeps its windows in a RowsEntryStore")
        self.rows: RowsEntryStore = self.store
        self._closing = self._index(self._closing.entries())

    def _index(self, entries: Iterable[tuple[int, str]] = ()) -> ClosingIndex:
        return ClosingIndex(entries, track_last=self.knows_new)

    def add_columns(self, columns: Columns, watermark_ns: int | None, offset: int = -1
                    ) -> list[Emission]:
        length = self.window_len_ns
        first = frozen_window(self._frozen_before_ns(watermark_ns), length)
        from_ns = inflight_from_ns(self.inflight_frozen_before_ns(columns, watermark_ns), length)
        part = partial_columns(columns, length, first, from_ns)
        if part is None:
            return super().add_columns(columns, watermark_ns, offset)
        volumes = [columns.volumes[v] for v in part.volume.tolist()]
        starts = part.cols.start.tolist()
        keys = list(zip(volumes, starts, strict=True))
        tenants = [columns.tenants[v] for v in part.volume.tolist()]
        new = self._surely_new(columns.volumes, part.volume, part.cols.start)
        plans = []  # all chunks merged before any is kept: else the objects' way, whole
        for at in range(0, len(keys), CHUNK_WINDOWS):
            chunk = slice(at, at + CHUNK_WINDOWS)
            parts = (part.cols if len(keys) <= CHUNK_WINDOWS else
                     part.cols.take_index(np.arange(len(keys))[chunk]))
            plan = self._merged(keys[chunk], tenants[chunk], parts, add_partial,
                                None if new is None else new[chunk])
            if plan is None:
                return super().add_columns(columns, watermark_ns, offset)
            plans.append(plan)
        self.late_beyond_horizon += part.late
        return [e for plan in plans for e in self._keep(*plan, offset)]

    def add_parts(self, keys: list[WindowKey], tenants: list[str], parts: WindowColumns,
                  owner: np.ndarray, offset: int = -1) -> list[Emission] | None:
        """Rollup parts into the windows of ``keys`` (distinct; a new one belongs to its
        tenant of ``tenants``): row i of ``parts`` goes into the window of
        ``keys[owner[i]]`` (RollupBook.add_emitted), each window reduced with its parts at
        once as WindowAcc.merge merges them. Returns the new revisions of the emitted
        windows they change, in the order of ``keys``; None when the columns cannot (an
        older stored window, a sum past int64): nothing changed."""
        plans = []
        for at in range(0, len(keys), CHUNK_WINDOWS):
            chunk = slice(at, at + CHUNK_WINDOWS)
            some, mine = parts, owner
            if len(keys) > CHUNK_WINDOWS:
                pick = np.flatnonzero((owner >= at) & (owner < at + CHUNK_WINDOWS))
                some, mine = parts.take_index(pick), owner[pick] - at
            plan = self._merged(keys[chunk], tenants[chunk], some,
                                functools.partial(_merge_rollup, owner=mine))
            if plan is None:
                return None
            plans.append(plan)
        return [e for plan in plans for e in self._keep(*plan, offset)]

    def _surely_new(self, names: Sequence[str], volume: np.ndarray, start: np.ndarray
                    ) -> np.ndarray | None:
        """Which of the windows of (``names[volume]``, ``start``) cannot be stored, known
        without reading the table: those ending after every window closed so far and
        after their volume's last open one (a stored window ending then would be open,
        so in the index). None: not known (nothing closed since the book was made or
        rebuilt). Most windows a unit's events reach are new, and each read of one missed
        in RocksDB (~1 µs with its key; ~1 % of the worker's CPU at 1,000 and at 100,000
        volumes: docs/performance.md, session 34)."""
        closed = self._closed_to_ns
        if closed is None or not self.knows_new or not len(volume):
            return None
        present, row = np.unique(volume, return_inverse=True)
        last_end = self._closing.last_end
        last = np.array([INT64_MIN if (end := last_end(names[v])) is None else end
                         for v in present.tolist()], dtype=np.int64)
        ends = start + self.window_len_ns
        return (ends > closed) & (ends > last[row.reshape(-1)])

    def _merged(self, keys: list[WindowKey], tenants: list[str], parts: WindowColumns,
                merge: Callable[[WindowColumns, WindowColumns], WindowColumns | None],
                new: np.ndarray | None = None
                ) -> tuple[list[WindowKey], list[str], WindowColumns, np.ndarray] | None:
        """The windows of ``keys`` as stored (or new, empty, of ``tenants``) with ``parts``
        merged in by ``merge``, and which are new; None when the columns cannot. ``new``:
        those known not to be stored (not read)."""
        stored = self.rows.take_rows(keys, new)
        if stored is None:
            return None
        held, found = stored
        new = np.flatnonzero(~found)
        starts = np.array([start for _, start in keys], dtype=np.int64)
        fresh = empty_windows(starts[new], np.full(len(new), self.window_len_ns, dtype=np.int64),
                              np.tile(np.array([0, -1, 0], dtype=np.int64), (len(new), 1)))
        base = concat([held.cols, fresh]).take_index(
            np.argsort(np.r_[np.flatnonzero(found), new], kind="stable"))
        merged = merge(base, parts)
        if merged is None:
            return None
        tenant_of = dict(zip(held.keys, held.tenants, strict=True))
        return (keys, [tenant if (held_tenant := tenant_of.get(key)) is None else held_tenant
                       for key, tenant in zip(keys, tenants, strict=True)], merged, new)

    def _keep(self, keys: list[WindowKey], tenants: list[str], merged: WindowColumns,
              new: np.ndarray, offset: int) -> list[Emission]:
        for k in new.tolist():
            self._closing.push(keys[k][1] + self.window_len_ns, keys[k][0])
        return self._put(keys, tenants, merged, offset)

    def _put(self, keys: list[WindowKey], tenants: list[str], merged: WindowColumns,
             offset: int) -> list[Emission]:
        """Keep the windows of ``keys`` as ``merged`` (its extra as it was read); the
        emitted ones get a new revision, returned."""
        extra = merged.extra.copy()
        revised = np.flatnonzero(extra[:, _EMITTED] == 1)
        emitted = EmittedRows(merged.take_index(revised).with_extra(extra[revised, :1]),
                              [(keys[k][0], tenants[k]) for k in revised.tolist()])
        extra[revised, _REVISION] += 1
        extra[revised, _OFFSET] = offset
        self.rows.put_rows(WindowRows(keys, tenants, merged.with_extra(extra)))
        return emitted.emissions(offset)

    def close_for(self, watermark_ns: int | None, offset: int = -1) -> list[Emission]:
        due = self._take_due(watermark_ns)
        length = self.window_len_ns
        keys = list(dict.fromkeys((volume_id, end_ns - length) for end_ns, volume_id in due))
        return [e for at in range(0, len(keys), CHUNK_WINDOWS)
                for e in self._close(keys[at:at + CHUNK_WINDOWS], offset)]

    def _close(self, keys: list[WindowKey], offset: int) -> list[Emission]:
        """Close the windows of ``keys`` (in their order) not emitted yet."""
        stored = self.rows.take_rows(keys)
        if stored is None:  # one by one, as objects
            return self._close_due([(start + self.window_len_ns, volume_id)
                                    for volume_id, start in keys], offset)
        held, _ = stored
        extra = held.cols.extra.copy()
        closing = np.flatnonzero(extra[:, _EMITTED] == 0)
        if not len(closing):
            return []
        # in the order of ``due`` (by end, then volume), as WindowBook.close_for
        emitted = EmittedRows(held.cols.take_index(closing).with_extra(extra[closing, :1]),
                              [(held.keys[k][0], held.tenants[k]) for k in closing.tolist()])
        extra[closing, _REVISION] += 1
        extra[closing, _OFFSET] = offset
        extra[closing, _EMITTED] = 1
        self.rows.put_rows(WindowRows(held.keys, held.tenants, held.cols.with_extra(extra)))
        return emitted.emissions(offset)


def _merge_rollup(base: WindowColumns, parts: WindowColumns, owner: np.ndarray
                  ) -> WindowColumns | None:
    """Each window of ``base`` with the rollup parts it owns (``owner``: each part's window)
    merged in (WindowAcc.merge), ``base``'s extra: one reduce of the windows and their
    parts, the window first in each group (its start and length)."""
    n = len(base)
    none = np.empty((n, 0), dtype=np.int64)
    merged = reduce_windows(concat([base.with_extra(none),
                                    parts.with_extra(np.empty((len(parts), 0), np.int64))]),
                            np.r_[np.arange(n), owner], n)
    return None if merged is None else merged.with_extra(base.extra)
