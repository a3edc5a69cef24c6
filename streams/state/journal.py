"""A table whose writes land all or none: a redo journal in front of a bytes table.

Pure: no faust, no aiokafka; the worker's table is any ``MutableMapping[bytes, bytes]``.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, MutableMapping
from typing import Any

from streams.core.windows.ranges import table_items_between
from streams.core.windows.stages import UnitTable

_ENTRY = struct.Struct("<Ii")  # key length, value length (-1: a delete)
_HEADER = struct.Struct("<BQII")  # format, unit, chunk index, chunks in the unit
JOURNAL_FORMAT = 1
JOURNAL_CHUNK_BYTES = 512 * 1024  # under Kafka's and faust's 1 MB default message limits
Write = tuple[bytes, "bytes | None"]  # (key, value), or (key, None): a delete


class JournaledTable(UnitTable):
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

    A table that says it lands a call of ``write_many`` all or none (``lands_whole``: the
    worker's tables send a unit's writes in one Kafka record batch when they fit in one,
    pipeline/changelogs.py) gets an empty journal instead of a copy: the unit's writes
    land with it or not at all, and the empty journal, the last whole one, keeps an older
    journal from being redone over them. That halves a live worker's changelog.

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

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """:meth:`get` of each of ``keys`` (None: none), the table's in one call when it
        reads many at once (pipeline/tables.py)."""
        pending = self.pending
        out: list[bytes | None] = [None] * len(keys)
        rest: list[int] = []
        for i, key in enumerate(keys):
            if key in pending:
                out[i] = pending[key]
            else:
                rest.append(i)
        many = getattr(self.table, "get_many", None)
        asked = [keys[i] for i in rest]
        found = many(asked) if many is not None else [self.table.get(key) for key in asked]
        for i, value in zip(rest, found, strict=True):
            out[i] = value
        return out

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

    def __len__(self) -> int:  # a scan of every key: nothing on a hot path asks
        return sum(1 for _ in self)

    def items_between(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) with lo <= key < hi in key order, the pending writes and deletes
        over the table's own range scan (windows/ranges.py)."""
        below = table_items_between(self.table, lo, hi)
        if not self.pending:
            return below
        return _overlay(below, sorted(item for item in self.pending.items()
                                      if lo <= item[0] < hi))

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
            # A table that lands these writes whole (one Kafka record batch, which the
            # log appends all or none) needs no copy of them: the journal then says only
            # that this unit is the last, so that no older one is redone over it.
            writes = self._journal([] if self._lands_whole(changes) else changes)
            writes += changes
            write_all(table, writes)
        pending.clear()
        return len(changes)

    def _lands_whole(self, changes: list[Write]) -> bool:
        """Whether the table lands ``changes`` together with the journal's own writes
        (an empty journal and the deletes of the chunks it leaves) all or none."""
        lands_whole = getattr(self.table, "lands_whole", None)
        if lands_whole is None:
            return False
        slot = 1 - self.slot
        spare: list[Write] = [(self.chunk_key(slot, 0), bytes(_HEADER.size))]
        spare += [(self.chunk_key(slot, index), None) for index in range(1, self.chunks[slot])]
        return bool(lands_whole(itertools.chain(spare, changes)))

    # -- the journal ----------------------------------------------------------------------

    def chunk_key(self, slot: int, index: int) -> bytes:
        return b"%s|%d|%d" % (self.journal_key, slot, index)

    def _journal(self, changes: list[tuple[bytes, bytes | None]]) -> list[Write]:
        """The writes of the unit's journal, to go before the unit's own: chunks of
        [header, then per entry: key and value lengths, key, value], then the deletes of
        chunks a bigger journal left in the slot."""
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
            return [(self.first_keys[slot], journal), *self._written(slot, 1)]
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
        writes: list[Write] = [  # in order: the last one lands last
            (self.chunk_key(slot, index),
             _HEADER.pack(JOURNAL_FORMAT, self.unit, index, len(chunks)) + b"".join(chunk))
            for index, chunk in enumerate(chunks)]
        return writes + self._written(slot, len(chunks))

    def _written(self, slot: int, count: int) -> list[Write]:
        """A journal of ``count`` chunks is whole in ``slot``: the deletes of the chunks
        left there by a bigger one (last first, so that those left are always chunks
        1 .. n-1)."""
        self.slot = slot
        deletes: list[Write] = []
        for index in range(self.chunks[slot] - 1, count - 1, -1):
            key = self.chunk_key(slot, index)
            if key in self.table:
                deletes.append((key, None))
        self.chunks[slot] = count
        return deletes

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


def write_all(table: MutableMapping[bytes, bytes], writes: list[Write]) -> None:
    """``writes`` into ``table`` in their order: at once, if the table takes a unit's
    writes together (``write_many``: the worker's tables send their changelog messages in
    batches, pipeline/changelogs.py), else one by one."""
    write_many = getattr(table, "write_many", None)
    if write_many is not None:
        write_many(writes)
    else:
        write_each(table, writes)


def write_each(table: MutableMapping[bytes, bytes], writes: list[Write]) -> None:
    """``writes`` into ``table`` one by one, in their order."""
    for key, value in writes:
        if value is None:
            del table[key]
        else:
            table[key] = value


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


def _overlay(below: Iterator[tuple[bytes, bytes]], over: list[tuple[bytes, bytes | None]]
             ) -> Iterator[tuple[bytes, bytes]]:
    """Two key-ordered runs merged, ``over``'s entries (None: a delete) in place of
    ``below``'s of the same key."""
    at, n = 0, len(over)
    for key, value in below:
        while at < n and over[at][0] < key:
            if over[at][1] is not None:
                yield over[at]  # type: ignore[misc]
            at += 1
        if at < n and over[at][0] == key:
            if over[at][1] is not None:
                yield over[at]  # type: ignore[misc]
            at += 1
            continue
        yield key, value
    for item in over[at:]:
        if item[1] is not None:
            yield item  # type: ignore[misc]
