"""Typed views of a bytes table: the window entries, rollup parts, billing entries and
replay marks of one stage, each under a key prefix of its own.

What eviction drops by time (windows, rollup parts, billing hours) is keyed
``prefix + start + volume_id``, the start as 8 bytes big-endian (offset by 2**63, so
signed starts sort too): the entries that start before a time are one key range, which a
table that scans key ranges in order (ranges.py, the worker's RocksDB partition) reads
without visiting the others. The replay marks stay ``prefix + volume_id|0``. Before
session 10 every kind was keyed ``prefix + volume_id|start`` (decimal) under other
prefixes; :meth:`StartOrderedStore.adopt` moves such a changelog's entries over once.

Windows, rollup parts and billing entries are written packed (packed.py: a few dozen bytes
where the compact JSON took hundreds); the JSON the previous versions wrote still loads (a
changelog written before), told by its first byte. The replay marks stay compact JSON (one
small value per volume).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import ItemsView, Iterator, MutableMapping, Sequence

import numpy as np
import orjson

from streams.core.billing import BillingEntry
from streams.core.counters import table_json
from streams.core.windows.acc import WindowAcc
from streams.core.windows.book import Part, WindowEntry, WindowKey, WindowRows
from streams.core.windows.columns import (
    WindowColumns,
    by_batch,
    concat,
    empty_windows,
    gather,
)
from streams.core.windows.packed import (
    BillingHour,
    entry_emission,
    is_packed,
    pack_billing,
    pack_billings,
    pack_columns,
    pack_entries,
    pack_entry,
    pack_part,
    unpack_billing,
    unpack_columns,
    unpack_entry,
    unpack_part,
)
from streams.core.windows.ranges import prefix_end, table_items_between

Table = MutableMapping[bytes, bytes]
_START = struct.Struct(">Q")
_BIAS = 1 << 63  # int64 starts to unsigned, order kept
_NONE = object()


class _Encoded(MutableMapping[WindowKey, object]):
    """A typed view of the table's keys under one prefix: (volume_id, start) -> value,
    keyed ``prefix + volume_id|start``. Iterating reads this prefix's key range only."""

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

    def _raw_between(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        return table_items_between(self.table, lo, hi)

    def scan(self) -> Iterator[tuple[WindowKey, object]]:
        """Every entry, decoded, in key order: one pass over this prefix's range."""
        decode_key, decode = self._decode_key, self.decode
        for raw, data in self._raw_between(self.prefix, prefix_end(self.prefix)):
            yield decode_key(raw), decode(data)

    def items(self) -> ItemsView[WindowKey, object]:
        return _ScanItems(self)

    def __iter__(self) -> Iterator[WindowKey]:
        decode_key = self._decode_key
        return (decode_key(raw) for raw, _ in
                self._raw_between(self.prefix, prefix_end(self.prefix)))

    def __len__(self) -> int:  # a scan of the prefix: nothing on a hot path asks
        return sum(1 for _ in self)


class _ScanItems(ItemsView[WindowKey, object]):
    """items() of a store: one range scan, not a scan of keys then a lookup per key."""

    _mapping: _Encoded

    def __iter__(self) -> Iterator[tuple[WindowKey, object]]:
        return self._mapping.scan()


class StartOrderedStore(_Encoded):
    """Keyed ``prefix + start + volume_id`` (module doc): :meth:`entries_between` reads
    the entries of a span of starts, in (start, volume) order, and nothing else.

    Within a stage's unit (stages.py) the values written are kept as objects and encoded
    once, when the unit ends (:meth:`write_back`): a window that a step's events touch and
    the watermark then closes, or a minute that many of a step's parts go into, is
    decoded and encoded once in the unit, not at every read and write. Reads see the kept
    objects first; a scan writes them back before it reads the table. Whoever reads a
    value and changes it writes it back (the books do): the object read is the one kept.
    A value that leaves in an emission is encoded at once and no longer kept
    (:meth:`seal`), so nothing later in the unit changes what was emitted.

    Across units: what a write-back wrote of the volumes the write-back before wrote too
    stays kept (not sealed ones), so a busy volume's windows, minute and billing hour are
    not decoded again by the next unit; a :meth:`get` hands such a value over (the caller
    changes it and writes it back), and a failed unit drops them all
    (:meth:`forget_unwritten`). docs/performance.md, session 19."""

    def __init__(self, table: Table, prefix: bytes) -> None:
        super().__init__(table, prefix)
        self._unwritten: dict[WindowKey, object] = {}
        self._sealed: dict[WindowKey, object] = {}  # emitted: never changed again
        # What the last write-back wrote that no emission holds, as objects (the table's
        # bytes decoded), of the volumes the write-back before wrote too: a busy volume's
        # windows, minute and billing hour, which the next unit likely reads again, are
        # not decoded each time; a fleet of many quiet volumes keeps none (memory).
        self._written: dict[WindowKey, object] = {}
        self._written_volumes: set[str] = set()  # the volumes the last write-back wrote

    def get(self, key: WindowKey, default: object = None) -> object:
        found = self._unwritten.get(key, _NONE)
        if found is not _NONE:
            return found
        if key in self._sealed:
            self._write_sealed(key)
        found = self._written.pop(key, _NONE)  # the caller may change it: no longer kept
        if found is not _NONE:
            return found
        data = self.table.get(self._key(key))
        return default if data is None else self.decode(data)

    def peek(self, key: WindowKey) -> object:
        """The value to read, never to change (None: none): a sealed one is not copied."""
        found = self._unwritten.get(key, _NONE)
        if found is _NONE:
            found = self._sealed.get(key, _NONE)
        if found is _NONE:
            found = self._written.get(key, _NONE)
        if found is not _NONE:
            return found
        data = self.table.get(self._key(key))
        return None if data is None else self.decode(data)

    def __getitem__(self, key: WindowKey) -> object:
        found = self.get(key, _NONE)
        if found is _NONE:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return (key in self._unwritten or key in self._sealed
                or self._key(key) in self.table)  # type: ignore[arg-type]

    def __setitem__(self, key: WindowKey, value: object) -> None:
        self._sealed.pop(key, None)  # written over in the same unit
        self._written.pop(key, None)
        self._unwritten[key] = value

    def __delitem__(self, key: WindowKey) -> None:
        raw = self._key(key)
        kept = self._unwritten.pop(key, _NONE) is not _NONE
        kept = self._sealed.pop(key, _NONE) is not _NONE or kept
        self._written.pop(key, None)
        if not kept or raw in self.table:
            del self.table[raw]

    def seal(self, key: WindowKey) -> None:
        """``key``'s kept value left in an emission: it is written as it is now, and a
        :meth:`get` (which may change what it returns) reads a copy of it from then on;
        :meth:`peek` still reads it. Encoded at :meth:`write_back`, with the others."""
        value = self._unwritten.pop(key, _NONE)
        if value is not _NONE:
            self._sealed[key] = value

    def _write_sealed(self, key: WindowKey) -> None:
        """Write a sealed value now: it is read to be changed."""
        self.table[self._key(key)] = self.encode(self._sealed.pop(key))

    def encode_many(self, values: list[object]) -> list[bytes]:
        """:meth:`encode` of each value (a store may encode many at once)."""
        return [self.encode(value) for value in values]

    def write_back(self) -> None:
        """Encode and write every kept value, sealed or not (a unit ends, or a scan
        begins)."""
        if self._unwritten or self._sealed:
            kept = [*self._sealed.items(), *self._unwritten.items()]
            table, key_of = self.table, self._key
            for (key, _), data in zip(kept, self.encode_many([value for _, value in kept]),
                                      strict=True):
                table[key_of(key)] = data
            self._sealed.clear()
            busy = self._written_volumes
            self._written_volumes = {volume for volume, _ in self._unwritten}
            self._written = {key: value for key, value in self._unwritten.items()
                             if key[0] in busy}
            self._unwritten.clear()

    def forget_unwritten(self) -> None:
        """Drop the kept values unwritten (a unit failed half-way), and the written ones
        (the unit may have changed them: the table's bytes are read again)."""
        self._sealed.clear()
        self._unwritten.clear()
        self._written.clear()
        self._written_volumes.clear()

    def _raw_between(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        self.write_back()
        return super()._raw_between(lo, hi)

    def _key(self, key: WindowKey) -> bytes:
        return self.prefix + _START.pack(key[1] + _BIAS) + key[0].encode()

    def _decode_key(self, raw: bytes) -> WindowKey:
        at = len(self.prefix)
        return raw[at + 8:].decode(), _START.unpack_from(raw, at)[0] - _BIAS

    def _bound(self, start_ns: int | None, lowest: bytes) -> bytes:
        if start_ns is None:
            return lowest
        return self.prefix + _START.pack(min(max(start_ns + _BIAS, 0), 2**64 - 1))

    def _range(self, lo_ns: int | None, hi_ns: int | None) -> tuple[bytes, bytes]:
        """The keys of the entries starting in [lo_ns, hi_ns) (None: unbounded)."""
        lo = self._bound(lo_ns, self.prefix)
        hi = prefix_end(self.prefix) if hi_ns is None or hi_ns >= _BIAS else self._bound(
            hi_ns, self.prefix)
        return lo, hi

    def entries_between(self, lo_ns: int | None, hi_ns: int | None
                        ) -> Iterator[tuple[WindowKey, object]]:
        """The entries starting in [lo_ns, hi_ns) (None: unbounded), by (start, volume)."""
        decode_key, decode = self._decode_key, self.decode
        for raw, data in self._raw_between(*self._range(lo_ns, hi_ns)):
            yield decode_key(raw), decode(data)

    def adopt(self, old_prefix: bytes) -> int:
        """Move the entries of the earlier layout (``old_prefix + volume_id|start``, the
        values as they are) under this store's keys; returns how many. Once, when a stage
        is built over a changelog written before: the writes land with its first unit."""
        old = _Encoded(self.table, old_prefix)
        moved = list(self._raw_between(old_prefix, prefix_end(old_prefix)))
        for raw, data in moved:
            self.table[self._key(old._decode_key(raw))] = data
            del self.table[raw]
        return len(moved)


class EntryStore(StartOrderedStore):
    def encode(self, value: object) -> bytes:
        assert isinstance(value, WindowEntry)
        return pack_entry(value.tenant_id, value.acc, value.revision, value.emitted,
                          value.emitted_offset)

    def encode_many(self, values: list[object]) -> list[bytes]:
        entries: list[WindowEntry] = values  # type: ignore[assignment]
        return pack_entries([(e.tenant_id, e.acc, e.revision, e.emitted, e.emitted_offset)
                             for e in entries])

    def decode(self, data: bytes) -> WindowEntry:
        if is_packed(data):
            tenant, acc_, revision_, emitted_, offset_ = unpack_entry(data)
            return WindowEntry(tenant, acc_, revision_, emitted_, offset_)
        tenant_id, acc, revision, emitted, *offset = orjson.loads(data)  # older: no offset
        return WindowEntry(tenant_id, WindowAcc.from_list(acc), revision, emitted,
                           offset[0] if offset else -1)

    def emissions_between(self, lo_ns: int | None, hi_ns: int | None
                          ) -> Iterator[tuple[WindowKey, bool, int]]:
        """(key, emitted, emitted_offset) of the windows starting in [lo_ns, hi_ns), by
        (start, volume): :meth:`entries_between` less the decoding eviction needs not."""
        decode_key = self._decode_key
        for raw, data in self._raw_between(*self._range(lo_ns, hi_ns)):
            if is_packed(data):
                emitted, offset = entry_emission(data)
            else:
                entry = self.decode(data)
                emitted, offset = entry.emitted, entry.emitted_offset
            yield decode_key(raw), emitted, offset


class PartsStore(StartOrderedStore):
    """A rollup's parts: (volume_id, part start) -> (revision, integers)."""

    def encode(self, value: object) -> bytes:
        assert isinstance(value, tuple)
        revision, acc = value
        return pack_part(revision, acc)

    def decode(self, data: bytes) -> Part:
        if is_packed(data):
            return unpack_part(data)
        revision, acc = orjson.loads(data)
        return revision, WindowAcc.from_list(acc)


def _billing_hour(value: object) -> BillingHour:
    """A BillingEntry's fields, as pack_billing takes them."""
    assert isinstance(value, BillingEntry)
    return value.tenant_id, value.counters, value.next_sequence, value.unconfirmed


class BillingStore(StartOrderedStore):
    def encode(self, value: object) -> bytes:
        return pack_billing(*_billing_hour(value))

    def encode_many(self, values: list[object]) -> list[bytes]:
        return pack_billings([_billing_hour(value) for value in values])

    def decode(self, data: bytes) -> BillingEntry:
        if is_packed(data):
            return BillingEntry(*unpack_billing(data))
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


class RowsEntryStore(EntryStore):
    """An :class:`EntryStore` whose unit may also keep windows as columns (``WindowRows``:
    the accounting stage's 1 s and 1 m windows, columnar.py): :meth:`put_rows` keeps them,
    :meth:`take_rows` reads any stored windows as columns, and every other read sees them
    too (a :meth:`get`
    makes the window an object the caller may change, as the store's own are). They are
    packed at :meth:`write_back`, all at once (packed.pack_columns)."""

    def __init__(self, table: Table, prefix: bytes) -> None:
        super().__init__(table, prefix)
        self._rows: dict[WindowKey, tuple[WindowRows, int]] = {}
        # What the last write-back wrote as columns of the volumes the one before wrote too,
        # windows not emitted: the next unit reads them without decoding (as _written).
        # Replaced at each write-back that writes columns, so it holds one unit's windows.
        self._written_rows: dict[WindowKey, tuple[WindowRows, int]] = {}
        self._rows_volumes: set[str] = set()

    def put_rows(self, rows: WindowRows) -> None:
        """Keep ``rows`` as the unit's value of their keys (over any other)."""
        keys = rows.keys
        self._rows.update(zip(keys, zip(itertools.repeat(rows), range(len(keys)), strict=False),
                              strict=True))
        for other in (self._unwritten, self._sealed, self._written, self._written_rows):
            if other:  # (the objects' dicts are mostly empty on this path)
                for key in keys:
                    other.pop(key, None)

    def take_rows(self, keys: Sequence[WindowKey], new: np.ndarray | None = None
                  ) -> tuple[WindowRows, np.ndarray] | None:
        """The stored windows of ``keys`` (distinct) as columns, in their order, and which
        of the keys have one; None when one of them does not fit the columns (an older
        stored window, an integer outside int64: the caller takes the objects' way).
        ``new``: which keys the caller knows have none (not looked up)."""
        found = np.zeros(len(keys), dtype=bool)
        kept, written_rows = self._rows, self._written_rows
        if new is None:
            from_rows, others = by_batch(kept.get(key) or written_rows.get(key)
                                         for key in keys)
        else:
            look = np.flatnonzero(~new).tolist()
            from_rows, others = by_batch(kept.get(keys[i]) or written_rows.get(keys[i])
                                         for i in look)
            from_rows = [(rows, [look[j] for j in at], ks) for rows, at, ks in from_rows]
            others = [look[j] for j in others]
        objects: list[tuple[int, WindowEntry]] = []
        stored: list[tuple[int, bytes]] = []
        unread: list[int] = []
        for i in others:
            key = keys[i]
            entry = self._unwritten.get(key) or self._sealed.get(key) or self._written.get(key)
            if entry is not None:
                objects.append((i, entry))  # type: ignore[arg-type]
                continue
            unread.append(i)
        if unread:
            raw = [self._key(keys[i]) for i in unread]
            many = getattr(self.table, "get_many", None)
            values = many(raw) if many is not None else [self.table.get(k) for k in raw]
            stored = [(i, data) for i, data in zip(unread, values, strict=True)
                      if data is not None]
        parts: list[WindowColumns] = []
        tenants: list[str] = []
        order: list[int] = []
        for rows, at, ks in from_rows:
            parts.append(rows.cols.take_index(np.array(ks, dtype=np.intp)))
            tenants += [rows.tenants[k] for k in ks]
            order += at
        if stored:  # the table's bytes, read all at once (else one by one, as objects)
            read = (unpack_columns([data for _, data in stored])
                    if all(is_packed(data) for _, data in stored) else None)
            if read is None:
                objects += [(i, self.decode(data)) for i, data in stored]
            else:
                parts.append(read[0])
                tenants += read[1]
                order += [i for i, _ in stored]
        if objects:
            cols = gather([e.acc for _, e in objects],
                          [(e.revision, e.emitted_offset, int(e.emitted)) for _, e in objects])
            if cols is None:
                return None
            parts.append(cols)
            tenants += [e.tenant_id for _, e in objects]
            order += [i for i, _ in objects]
        found[order] = True
        if not parts:
            return WindowRows([], [], empty_windows(*(np.empty(0, dtype=np.int64),) * 2,
                                                    np.empty((0, 3), dtype=np.int64))), found
        cols = concat(parts)
        rank = np.argsort(np.array(order, dtype=np.intp), kind="stable")
        return WindowRows([keys[i] for i in sorted(order)], [tenants[r] for r in rank.tolist()],
                          cols.take_index(rank)), found

    def get(self, key: WindowKey, default: object = None) -> object:
        hit = self._rows.pop(key, None)
        if hit is not None:  # the caller may change it: an object of the unit from now on
            entry = hit[0].entry(hit[1])
            self._unwritten[key] = entry
            return entry
        hit = self._written_rows.pop(key, None)
        if hit is not None:  # as the table has it; the caller may change it: not kept
            return hit[0].entry(hit[1])
        return super().get(key, default)

    def peek(self, key: WindowKey) -> object:
        hit = self._rows.get(key) or self._written_rows.get(key)
        return hit[0].entry(hit[1]) if hit is not None else super().peek(key)

    def __contains__(self, key: object) -> bool:
        return key in self._rows or super().__contains__(key)

    def __setitem__(self, key: WindowKey, value: object) -> None:
        self._rows.pop(key, None)
        self._written_rows.pop(key, None)
        super().__setitem__(key, value)

    def __delitem__(self, key: WindowKey) -> None:
        self._written_rows.pop(key, None)
        if self._rows.pop(key, None) is not None:  # no object is kept for it (put_rows)
            raw = self._key(key)
            if raw in self.table:
                del self.table[raw]
            return
        super().__delitem__(key)

    def write_back(self) -> None:
        if self._rows:
            groups, _ = by_batch(self._rows.values())
            table, key_of = self.table, self._key
            busy = self._rows_volumes
            self._rows_volumes = {volume for volume, _ in self._rows}
            written: dict[WindowKey, tuple[WindowRows, int]] = {}
            for rows, _, ks in groups:
                index = np.array(sorted(ks), dtype=np.intp)
                cols = rows.cols.take_index(index)
                emitted = cols.extra[:, 2].tolist()
                tenants = [rows.tenants[k] for k in index.tolist()]
                keys = [rows.keys[k] for k in index.tolist()]
                again: list[int] = []
                for j, (key, data, done) in enumerate(zip(keys, pack_columns(
                        cols, tenants, [bool(e) for e in emitted]), emitted, strict=True)):
                    table[key_of(key)] = data
                    if not done and key[0] in busy:
                        again.append(j)
                if again:  # their own columns: a kept row pins no other window's
                    pick = np.array(again, dtype=np.intp)
                    mine = WindowRows([keys[j] for j in again], [tenants[j] for j in again],
                                      cols.take_index(pick))
                    written.update((key, (mine, j)) for j, key in enumerate(mine.keys))
            self._written_rows = written
            self._rows.clear()
        elif self._unwritten or self._sealed:
            self._rows_volumes = set()
        super().write_back()

    def forget_unwritten(self) -> None:
        self._rows.clear()
        self._written_rows.clear()
        self._rows_volumes.clear()
        super().forget_unwritten()
