"""Event-time windowing of one input partition (SEMANTICS.md section 4).

Pure logic: no faust, no aiokafka. :class:`PartitionClock` is the watermark;
:class:`WindowBook` keeps one partition's 1 s windows in any mutable mapping
(a dict in tests, a Faust table in the worker) and says what to publish:
windows the watermark closed, and new revisions of windows a late event or a
long request reached. :class:`RollupBook` builds 1 m windows from 1 s ones and
1 h windows from 1 m ones, never from raw events (windows/stages.py runs
each length as a stage of its own, fed by the topic of the length below).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.core.batch import Columns, EventBatch
from streams.core.closing import ClosingIndex
from streams.core.marks import judge_marks
from streams.core.sorting import first_and_last
from streams.core.windows.acc import NS_PER_S, WindowAcc, rollup, window_start_ns
from streams.core.windows.columns import (
    WindowColumns,
    by_batch,
    concat,
    reduce_windows,
    to_accs,
)
from streams.core.windows.ranges import entries_between
from streams.core.windows.vector import frozen_window, inflight_from_ns, window_partials

WindowKey = tuple[str, int]  # (volume_id, window_start_ns)
ProducedColumns = tuple[Columns, tuple[str, int] | None]  # a record's events, its producer


@dataclass(frozen=True, slots=True)
class Parts:
    """Many records' events, part after part (a part: one record's events of one volume,
    with the record's (producer, seq)): what :func:`unapplied` takes as a list of
    ProducedColumns, as arrays (core/step.py makes them for a whole step)."""

    columns: Columns  # events of part k: [bounds[k], bounds[k + 1]), all of one volume
    bounds: np.ndarray
    volume: np.ndarray  # per part: index into columns.volumes
    producers: Sequence[str]
    producer: np.ndarray  # per part: index into producers
    seq: np.ndarray  # per part, int64


@dataclass(frozen=True, slots=True)
class WindowSettings:
    grace_ns: int = 2 * NS_PER_S
    idle_timeout_ns: int = 5 * NS_PER_S
    horizon_ns: int = 3600 * NS_PER_S


@dataclass(slots=True)
class PartitionClock:
    """Watermark of one input partition: largest complete_ns - grace, raised when idle."""

    grace_ns: int
    idle_timeout_ns: int
    watermark_ns: int | None = None
    last_input_wall_ns: int | None = None

    def on_input(self, max_complete_ns: int, wall_ns: int) -> int | None:
        self.last_input_wall_ns = wall_ns
        return self._raise_to(max_complete_ns - self.grace_ns)

    def on_wall_clock(self, wall_ns: int) -> int | None:
        """Raise an idle partition's watermark to wall - grace - idle timeout.

        A partition that has had no input yet is quiet since the clock first saw it: the
        idle timeout runs from there. (Raising at once would make everything that then
        arrives from more than grace + idle timeout ago late, a backfill or a producer that
        starts a moment after the worker, and every record a revision.)"""
        if self.last_input_wall_ns is None:
            self.last_input_wall_ns = wall_ns
        if wall_ns - self.last_input_wall_ns >= self.idle_timeout_ns:
            return self._raise_to(wall_ns - self.grace_ns - self.idle_timeout_ns)
        return self.watermark_ns

    def _raise_to(self, candidate_ns: int) -> int | None:
        if self.watermark_ns is None or candidate_ns > self.watermark_ns:
            self.watermark_ns = candidate_ns  # never moves back
        return self.watermark_ns


@dataclass(slots=True)
class WindowEntry:
    tenant_id: str
    acc: WindowAcc
    revision: int = 0  # the revision the next emission carries
    emitted: bool = False
    emitted_offset: int = -1  # the raw offset whose processing made the last emission


@dataclass(eq=False)
class WindowRows:
    """Windows of one stage held as columns (columns.py) with their keys and entries'
    fields: ``cols.extra`` is (revision, emitted_offset, emitted) per window."""

    keys: list[WindowKey]
    tenants: list[str]
    cols: WindowColumns

    def entry(self, k: int) -> WindowEntry:
        """Window ``k`` as a WindowEntry (objects)."""
        revision, offset, emitted = self.cols.extra[k].tolist()
        return WindowEntry(self.tenants[k], to_accs(self.cols.take_index(np.array([k])))[0],
                           revision, bool(emitted), offset)


@dataclass(eq=False)
class EmittedRows:
    """The windows of emissions made from columns: ``cols.extra[:, 0]`` is each one's
    revision, ``names`` its (volume_id, tenant_id). Their objects are made when first
    asked for (WindowStatsEncoder.encode_columns needs none)."""

    cols: WindowColumns
    names: list[tuple[str, str]]
    _accs: list[WindowAcc] | None = None

    def acc(self, k: int) -> WindowAcc:
        if self._accs is None:
            self._accs = to_accs(self.cols)
        return self._accs[k]

    def emissions(self, offset: int) -> list[Emission]:
        return [Emission(volume_id, tenant_id, None, revision, offset, (self, k))
                for k, ((volume_id, tenant_id), revision)
                in enumerate(zip(self.names, self.cols.extra[:, 0].tolist(), strict=True))]


class Emission:
    """A window record to publish: its volume, tenant, integers (``acc``), revision and
    the input offset whose processing made it. One made from columns (``source``: its
    :class:`EmittedRows` and index there) makes ``acc`` when first read."""

    __slots__ = ("volume_id", "tenant_id", "_acc", "revision", "offset", "source")

    def __init__(self, volume_id: str, tenant_id: str, acc: WindowAcc | None, revision: int,
                 offset: int = -1, source: tuple[EmittedRows, int] | None = None) -> None:
        if acc is None and source is None:
            raise ValueError("an emission needs its integers or the columns that hold them")
        self.volume_id = volume_id
        self.tenant_id = tenant_id
        self._acc = acc
        self.revision = revision
        self.offset = offset
        self.source = source

    @property
    def acc(self) -> WindowAcc:
        acc = self._acc
        if acc is None:
            assert self.source is not None
            rows, k = self.source
            acc = self._acc = rows.acc(k)
        return acc

    @property
    def start_ns(self) -> int:
        if self._acc is None and self.source is not None:
            return int(self.source[0].cols.start[self.source[1]])
        return self.acc.window_start_ns

    @property
    def length_ns(self) -> int:
        if self._acc is None and self.source is not None:
            return int(self.source[0].cols.length[self.source[1]])
        return self.acc.window_len_ns

    def _fields(self) -> tuple[Any, ...]:
        return self.volume_id, self.tenant_id, self.acc, self.revision, self.offset

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Emission):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # its acc is mutable

    def __repr__(self) -> str:
        return (f"Emission(volume_id={self.volume_id!r}, tenant_id={self.tenant_id!r}, "
                f"acc={self.acc!r}, revision={self.revision!r}, offset={self.offset!r})")


@dataclass
class WindowBook:
    """The open and revisable windows of one length for the volumes of one partition."""

    settings: WindowSettings
    store: MutableMapping[WindowKey, WindowEntry]
    window_len_ns: int = NS_PER_S
    late_beyond_horizon: int = 0
    _closing: ClosingIndex = field(default_factory=ClosingIndex)  # open windows by end
    # No window starting before this is evictable any more: the next eviction's scan
    # starts here (None: unknown, from the first key), not over the deleted keys.
    _evict_from_ns: int | None = None
    # The highest watermark windows were closed for: every window ending at or before it
    # has been taken from _closing, so one ending after it is open or not stored (None:
    # unknown, none closed since the book was made or rebuilt).
    _closed_to_ns: int | None = None

    @property
    def has_open_windows(self) -> bool:
        return bool(self._closing)

    def rebuild_index(self) -> None:
        """After recovery: find the windows still to close in the store."""
        self._evict_from_ns = None
        self._closed_to_ns = None
        self._closing = self._index((start + self.window_len_ns, volume)
                                    for (volume, start), entry in self.store.items()
                                    if not entry.emitted)

    def _index(self, entries: Iterable[tuple[int, str]] = ()) -> ClosingIndex:
        """The index of the open windows (ColumnarBook's knows each volume's last end)."""
        return ClosingIndex(entries)

    def _take_due(self, watermark_ns: int | None) -> list[tuple[int, str]]:
        """The windows the watermark has passed, taken from the index (by end, volume)."""
        if watermark_ns is not None and (self._closed_to_ns is None
                                         or watermark_ns > self._closed_to_ns):
            self._closed_to_ns = watermark_ns
        return self._closing.take_due(watermark_ns)

    def _entry(self, volume_id: str, tenant_id: str, start: int) -> WindowEntry:
        entry = self.store.get((volume_id, start))
        if entry is None:
            entry = WindowEntry(tenant_id, WindowAcc.empty(start, self.window_len_ns))
            self._closing.push(start + self.window_len_ns, volume_id)
        return entry

    def _frozen_before_ns(self, watermark_ns: int | None) -> int | None:
        return None if watermark_ns is None else watermark_ns - self.settings.horizon_ns

    def inflight_frozen_before_ns(self, columns: Columns, watermark_ns: int | None
                                  ) -> int | None:
        """The revision horizon as the watermark stands once ``columns`` are in (their
        largest complete_ns - grace, if later): in-flight time reaches no window it
        freezes, since this very batch would freeze it, but a request's own completion
        window. So a request touches at most (grace + horizon) / window length + 1
        windows, however long it was in flight."""
        if len(columns):
            after = int(columns.complete_ns.max()) - self.settings.grace_ns
            watermark_ns = after if watermark_ns is None else max(watermark_ns, after)
        return self._frozen_before_ns(watermark_ns)

    def add_events(
        self, batch: EventBatch, watermark_ns: int | None, offset: int = -1,
    ) -> list[Emission]:
        """:meth:`add_columns` for one volume's events."""
        return self.add_columns(Columns.of_batch(batch), watermark_ns, offset)

    def add_columns(
        self, columns: Columns, watermark_ns: int | None, offset: int = -1,
    ) -> list[Emission]:
        """Add validated events of any volumes, in one vectorised pass; returns new
        revisions of windows already emitted (``offset``: the input offset being
        processed, stamped on them). Every event sees ``watermark_ns``: those whose window
        is past the revision horizon count in ``late_beyond_horizon`` only; in-flight
        time reaches no window past the horizon of the watermark these events make
        (:meth:`inflight_frozen_before_ns`)."""
        length = self.window_len_ns
        first = frozen_window(self._frozen_before_ns(watermark_ns), length)
        from_ns = inflight_from_ns(self.inflight_frozen_before_ns(columns, watermark_ns), length)
        partials = window_partials(columns, length, first, from_ns)
        self.late_beyond_horizon += partials.late
        touched: dict[tuple[int, int], WindowEntry] = {}

        def entry(volume: int, window: int) -> WindowEntry:
            found = touched.get((volume, window))
            if found is None:
                found = touched[(volume, window)] = self._entry(
                    columns.volumes[volume], columns.tenants[volume], window * length)
            return found

        for part in partials.completions:
            entry(part.volume, part.window).acc.ops[part.op].add_partial(part)
        for volume, window, op, inflight_ns in partials.inflight:
            entry(volume, window).acc.ops[op].inflight_ns += inflight_ns
        for (volume, window), (intervals, length_ns) in partials.busy.items():
            entry(volume, window).acc.union_busy(intervals, length_ns)
        ordered = sorted(touched.items())
        for (volume, window), found in ordered:
            self.store[(columns.volumes[volume], window * length)] = found
        return [self._revise(columns.volumes[volume], found, offset)
                for (volume, _), found in ordered if found.emitted]

    def _revise(self, volume_id: str, entry: WindowEntry, offset: int) -> Emission:
        emission = Emission(volume_id, entry.tenant_id, entry.acc, entry.revision, offset)
        entry.revision += 1
        entry.emitted_offset = offset
        key = (volume_id, entry.acc.window_start_ns)
        self.store[key] = entry
        seal = getattr(self.store, "seal", None)  # a store that keeps a unit's writes as
        if seal is not None:  # objects (stores.py): the emission's acc changes no more
            seal(key)
        return emission

    def close_for(self, watermark_ns: int | None, offset: int = -1) -> list[Emission]:
        """Emit, in order of their ends, the windows the watermark has passed
        (``offset``: the input offset being processed, stamped on them)."""
        return self._close_due(self._take_due(watermark_ns), offset)

    def _close_due(self, due: list[tuple[int, str]], offset: int) -> list[Emission]:
        emitted: list[Emission] = []
        for end_ns, volume_id in due:
            entry = self.store.get((volume_id, end_ns - self.window_len_ns))
            if entry is None or entry.emitted:
                continue
            entry.emitted = True
            emitted.append(self._revise(volume_id, entry, offset))
        return emitted

    def evictable(self, watermark_ns: int | None, committed: int | None = None
                  ) -> list[WindowKey]:
        """Emitted windows past the revision horizon: they can never change again.

        ``committed``: the input offset the group has committed; a window emitted at or
        past it stays, since its record may not have landed and a new owner must send it
        again (replay_outputs) after a crash (None: no such limit)."""
        return self._evictable(watermark_ns, committed)[0]

    def evict(self, watermark_ns: int | None, committed: int | None = None) -> int:
        """Drop :meth:`evictable`'s windows; returns how many. It reads the windows that
        start before the horizon and after the last eviction's kept ones only (a range
        of the store's keys, ranges.py), so its cost follows what it drops."""
        keys, self._evict_from_ns = self._evictable(watermark_ns, committed)
        for key in keys:
            del self.store[key]
        return len(keys)

    def _evictable(self, watermark_ns: int | None, committed: int | None
                   ) -> tuple[list[WindowKey], int | None]:
        """The keys to drop, and where the next scan can start: the first window of the
        range kept (not emitted, or not committed yet), else the range's end (no window
        starts before it again: those would be past the horizon)."""
        frozen_before = self._frozen_before_ns(watermark_ns)
        if frozen_before is None:
            return [], self._evict_from_ns
        end_ns = frozen_before - self.window_len_ns + 1  # start + length <= frozen_before
        keys: list[WindowKey] = []
        kept_ns: int | None = None
        for key, emitted, offset in _emissions_between(self.store, self._evict_from_ns, end_ns):
            if emitted and (committed is None or offset < committed):
                keys.append(key)
            elif kept_ns is None:
                kept_ns = key[1]
        return keys, end_ns if kept_ns is None else kept_ns


def _emissions_between(store: MutableMapping[WindowKey, WindowEntry], lo_ns: int | None,
                       hi_ns: int) -> Iterator[tuple[WindowKey, bool, int]]:
    """(key, emitted, emitted_offset) of the windows starting in [lo_ns, hi_ns), by start:
    the store's own reader, which decodes no more (stores.py), else from the entries."""
    read = getattr(store, "emissions_between", None)
    if read is not None:
        found: Iterator[tuple[WindowKey, bool, int]] = read(lo_ns, hi_ns)
        return found
    return ((key, entry.emitted, entry.emitted_offset)
            for key, entry in entries_between(store, lo_ns, hi_ns))


Part = tuple[int, WindowAcc]  # a part's revision and integers, by (volume_id, part start)


class EmittedParts(MutableMapping[WindowKey, Part]):
    """The parts of a rollup that runs in the unit of the stage below it: that stage's own
    windows (``windows``, its store), each as last emitted; an open window is no part yet.
    The stage below writes them: writes through this view are refused."""

    def __init__(self, windows: MutableMapping[WindowKey, WindowEntry]) -> None:
        self.windows = windows
        # a store that keeps a unit's writes as objects reads one without copying it
        # (stores.py): a part is only read
        self._read = getattr(windows, "peek", windows.get)

    def __getitem__(self, key: WindowKey) -> Part:
        entry = self._read(key)
        if entry is None or not entry.emitted:
            raise KeyError(key)
        return entry.revision - 1, entry.acc

    def __iter__(self) -> Iterator[WindowKey]:  # a scan: nothing on a hot path asks
        return (key for key, entry in self.windows.items() if entry.emitted)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, key: WindowKey, value: Part) -> None:
        raise TypeError("these parts are the stage below's windows: it writes them")

    def __delitem__(self, key: WindowKey) -> None:
        raise TypeError("these parts are the stage below's windows: it evicts them")


@dataclass
class RollupBook:
    """Windows of ``window_len_ns`` built from the latest revision of their shorter parts:
    the windows one length down that the same stage emits (:class:`EmittedParts`)."""

    inner: WindowBook
    parts: MutableMapping[WindowKey, Part] = field(default_factory=dict)

    def rebuild_index(self) -> None:
        self.inner.rebuild_index()

    def add_emitted(self, emissions: Sequence[Emission], offset: int = -1) -> list[Emission]:
        """The windows the stage below emitted in this same unit, in order, where ``parts``
        are that stage's own windows as emitted (:class:`EmittedParts`), which hold them
        already as the unit leaves them. Per window of this length they reach: their
        parts are merged into it when all are first revisions (new parts), else it is
        made again from all its parts (a minimum cannot be taken back); an emitted window
        gets one new revision for the unit. No replay check: the unit that emitted the parts
        lands with this one, or neither does, so no part comes twice."""
        length = self.inner.window_len_ns
        part_len_ns = emissions[0].length_ns if emissions else 0  # the stage below's
        reached: dict[WindowKey, tuple[str, list[Emission] | None]] = {}
        for e in emissions:
            key = (e.volume_id, window_start_ns(e.start_ns, length))
            tenant_id, new = reached.setdefault(key, (e.tenant_id, []))
            if new is not None and e.revision:  # a revised part: the window is made again
                reached[key] = (tenant_id, None)
            elif new is not None:
                new.append(e)
        adding = [key for key, (_, new) in reached.items() if new]
        made = self._add_summed(adding, [reached[key][0] for key in adding],
                                [reached[key][1] or [] for key in adding], part_len_ns, offset)
        return [revised for key, (tenant_id, new) in reached.items()
                for revised in (made[key] if new is not None else self._update(
                    key[0], tenant_id, key[1], None, part_len_ns, offset))]

    def _add_summed(self, keys: list[WindowKey], tenants: list[str],
                    parts: list[list[Emission]], part_len_ns: int, offset: int
                    ) -> dict[WindowKey, list[Emission]]:
        """New parts into the windows of ``keys``: merged in as columns, by a window book
        that takes them (columnar.ColumnarBook.add_parts: each window and its parts in one
        reduce), else summed as columns and merged one window at a time as objects
        (:meth:`_update`); the emitted windows' new revisions, by key."""
        gathered = _gathered_columns(parts)
        add_parts = getattr(self.inner, "add_parts", None)
        if gathered is not None and add_parts is not None:
            made = add_parts(keys, tenants, *gathered, offset)
            if made is not None:
                out: dict[WindowKey, list[Emission]] = {key: [] for key in keys}
                for e in made:
                    out[(e.volume_id, window_start_ns(e.start_ns, self.inner.window_len_ns))
                        ].append(e)
                return out
        summed = None if gathered is None else reduce_windows(*gathered, len(keys))
        accs = ([[acc] for acc in to_accs(summed)] if summed is not None
                else [[e.acc for e in group] for group in parts])
        return {key: self._update(key[0], tenant, key[1], new, part_len_ns, offset)
                for key, tenant, new in zip(keys, tenants, accs, strict=True)}

    def _update(self, volume_id: str, tenant_id: str, start: int, new: list[WindowAcc] | None,
                part_len_ns: int, offset: int) -> list[Emission]:
        """The window of ``start`` with ``new`` parts merged in, or (None) made again from
        all its parts (a minimum cannot be taken back); a new revision if it was emitted."""
        entry = self.inner._entry(volume_id, tenant_id, start)
        if new is None:
            length = self.inner.window_len_ns
            found = (self.parts.get((volume_id, s))
                     for s in range(start, start + length, part_len_ns))
            entry.acc = rollup([p[1] for p in found if p is not None], length)
        else:
            for part in new:
                entry.acc.merge(part)
        self.inner.store[(volume_id, start)] = entry
        return [self.inner._revise(volume_id, entry, offset)] if entry.emitted else []

    def close_for(self, watermark_ns: int | None, offset: int = -1) -> list[Emission]:
        return self.inner.close_for(watermark_ns, offset)


def _gathered_columns(groups: list[list[Emission]]) -> tuple[WindowColumns, np.ndarray] | None:
    """The windows of all groups' emissions as columns, and each row's group; None when
    one was not made from columns."""
    owners = [g for g, group in enumerate(groups) for _ in group]
    # An emission whose object was made may have been changed: the columns may be stale.
    batches, objects = by_batch(e.source if e._acc is None else None
                                for group in groups for e in group)
    if objects or not batches:
        return None
    cols = concat([rows.cols.take_index(np.array(ks, dtype=np.intp))
                   for rows, _, ks in batches])
    owner = np.array(owners, dtype=np.intp)[np.concatenate([at for _, at, _ in batches])]
    return cols, owner


def unapplied(records: Sequence[ProducedColumns],
              applied_of: Callable[[str], dict[str, int] | None]
              ) -> tuple[Columns, dict[str, dict[str, int]]]:
    """The events of ``records`` whose volume has not applied their (producer, seq) yet
    (``applied_of``: a volume's highest applied seq per producer), in order, and the new
    marks to write per volume. A record repeated within ``records`` counts once."""
    seqs: dict[str, dict[str, int]] = {}
    marks: dict[str, dict[str, int]] = {}
    kept: list[Columns] = []
    for columns, producer in records:
        if producer is None or len(columns) == 0:
            kept.append(columns)
            continue
        producer_id, seq = producer
        skip = np.zeros(len(columns.volumes), dtype=bool)
        for v in np.flatnonzero(np.bincount(columns.volume, minlength=len(skip))).tolist():
            volume_id = columns.volumes[v]
            if volume_id not in seqs:
                seqs[volume_id] = dict(applied_of(volume_id) or {})
            if seq <= seqs[volume_id].get(producer_id, -1):
                skip[v] = True
            else:
                seqs[volume_id][producer_id] = seq
                marks[volume_id] = seqs[volume_id]
        kept.append(columns.take(~skip[columns.volume]) if skip.any() else columns)
    return (kept[0] if len(kept) == 1 else Columns.concat(kept)), marks


def unapplied_parts(parts: Parts, applied_of: Callable[[str], dict[str, int] | None]
                    ) -> tuple[Columns, dict[str, dict[str, int]]]:
    """:func:`unapplied` of many parts in one pass (core/marks.py): the same events kept,
    the same marks, in the same order."""
    sizes = np.diff(parts.bounds)
    items = np.flatnonzero(sizes)  # an empty part is neither judged nor marked
    if not len(items):
        return parts.columns, {}
    n_prod = max(1, len(parts.producers))
    pair = parts.volume[items] * n_prod + parts.producer[items]
    groups, group = np.unique(pair, return_inverse=True)
    applied = {v: applied_of(parts.columns.volumes[v])
               for v in dict.fromkeys((groups // n_prod).tolist())}
    initial = np.array([(applied[v] or {}).get(parts.producers[p], -1) for v, p in
                        zip((groups // n_prod).tolist(), (groups % n_prod).tolist(),
                            strict=True)], dtype=np.int64)
    new, _ = judge_marks(group, parts.seq[items], initial, np.ones(len(groups), dtype=bool))
    marks: dict[str, dict[str, int]] = {}
    # Per (volume, producer) with a new part, in the order of its first new part (the
    # order the parts' loop would make the marks in): the seq of its last new part.
    new_group = group[new]
    firsts, lasts = first_and_last(new_group)
    by_first = np.argsort(firsts, kind="stable")
    new_seq = parts.seq[items[new]]
    for pair_of, seq in zip(groups[new_group[firsts[by_first]]].tolist(),
                            new_seq[lasts[by_first]].tolist(), strict=True):
        v, p = divmod(pair_of, n_prod)
        volume_id = parts.columns.volumes[v]
        seqs = marks.get(volume_id)
        if seqs is None:
            seqs = marks[volume_id] = dict(applied[v] or {})
        seqs[parts.producers[p]] = seq
    if new.all():
        return parts.columns, marks
    keep = np.ones(len(sizes), dtype=bool)
    keep[items[~new]] = False
    return parts.columns.take(np.repeat(keep, sizes)), marks
