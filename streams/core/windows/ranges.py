"""Key-ordered range scans, so that eviction visits what it evicts and no more.

A bytes table that can scan a key range in order (the worker's RocksDB-backed table of
one partition, a JournaledTable over it) says so with ``items_between``; any other
mapping (a dict in tests, faust's memory store) is filtered and sorted, which costs a scan
of every key but gives the same answer. A (volume_id, start) store does the same by start:
the stage's stores keep their keys in start order (stores.py: ``entries_between``), a
dict is sorted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, TypeVar, runtime_checkable

V = TypeVar("V")
StartKey = tuple[str, int]  # (volume_id, start_ns)


@runtime_checkable
class RangeTable(Protocol):
    def items_between(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The (key, value) pairs with lo <= key < hi, in key order."""


@runtime_checkable
class StartOrdered(Protocol[V]):  # type: ignore[misc]
    def entries_between(self, lo_ns: int | None, hi_ns: int | None
                        ) -> Iterator[tuple[StartKey, V]]:
        """The entries whose start is in [lo_ns, hi_ns) (None: unbounded), by start."""


def prefix_end(prefix: bytes) -> bytes:
    """The least key above every key that starts with ``prefix`` (a non-empty prefix that
    does not end in 0xff: ours end in ``|``)."""
    assert prefix and prefix[-1] != 0xFF, prefix
    return prefix[:-1] + bytes([prefix[-1] + 1])


def table_items_between(table: Mapping[bytes, bytes], lo: bytes, hi: bytes
                        ) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) with lo <= key < hi, in key order: the table's own range scan, if it
    has one, else a filter of every key."""
    if isinstance(table, RangeTable):
        return table.items_between(lo, hi)
    return iter(sorted((k, v) for k, v in table.items() if lo <= k < hi))


def entries_between(store: Mapping[StartKey, V], lo_ns: int | None, hi_ns: int | None
                  ) -> Iterator[tuple[StartKey, V]]:
    """The entries of a (volume_id, start) store whose start is in [lo_ns, hi_ns), by
    (start, volume): the store's own range scan, else a filter of every entry."""
    if isinstance(store, StartOrdered):
        return store.entries_between(lo_ns, hi_ns)
    found = [(k, v) for k, v in store.items()
             if (lo_ns is None or k[1] >= lo_ns) and (hi_ns is None or k[1] < hi_ns)]
    found.sort(key=lambda kv: (kv[0][1], kv[0][0].encode()))
    return iter(found)
