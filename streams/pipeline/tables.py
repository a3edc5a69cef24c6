"""Where the worker's tables live: faust's RocksDB store (rocksdict) on the worker's data
dir, or its in-memory store (``IOACCT_TABLE_STORE``).

With RocksDB a restarted worker reads its tables from disk and only the changelog's tail
(faust keeps each partition's changelog offset in the partition's database). That holds
only after a clean stop: faust writes a table value to RocksDB at once and to the
changelog later, so a worker killed in between has values on disk that the changelog
never got. A worker that then skipped the record again (the replay checks) would keep
them on disk alone, and the next owner of the partition would not see them. So the
tables directory is marked clean once a stopping worker's producer has delivered every
changelog write, and a worker that starts without that mark (killed, crashed, out of
power) drops its local tables and rebuilds them from the changelog, as the memory store
always does.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from rocksdict import ReadOptions

from streams.config import Settings
from streams.core.windows.ranges import table_items_between

log = logging.getLogger(__name__)
TABLE_STORES = ("rocksdb", "memory")
CLEAN_MARK = "STOPPED-CLEANLY"


def store_url(settings: Settings) -> str:
    if settings.table_store not in TABLE_STORES:
        raise ValueError(f"IOACCT_TABLE_STORE={settings.table_store!r} is not one of "
                         f"{'/'.join(TABLE_STORES)}")
    return f"{settings.table_store}://"


def table_options(settings: Settings) -> dict[str, Any] | None:
    """Each table's RocksDB options (a new dict per table: faust's store pops from it)."""
    if settings.table_store != "rocksdb":
        return None
    return {"write_buffer_size": settings.table_write_buffer_bytes,
            "max_write_buffer_number": 2,
            "block_cache_size": settings.table_block_cache_bytes}


def open_tables_dir(settings: Settings, tabledir: Path) -> bool:
    """Before the app starts: keep the local tables if the last worker on ``tabledir``
    stopped cleanly, else drop them (module doc); returns whether they were kept. The
    mark is taken away: this worker is running now."""
    if settings.table_store != "rocksdb":
        return False
    mark = tabledir / CLEAN_MARK
    kept = mark.exists()
    if kept:
        mark.unlink()
    elif tabledir.exists():
        log.warning("%s: the last worker here did not stop cleanly; its tables are "
                    "dropped and rebuilt from the changelog", tabledir)
        shutil.rmtree(tabledir)
    tabledir.mkdir(parents=True, exist_ok=True)
    return kept


def mark_clean_on_stop(app: Any, settings: Settings, tabledir: Path) -> None:
    """Mark ``tabledir`` clean when the app stops, once every changelog write landed."""
    if settings.table_store != "rocksdb":
        return

    @app.on_before_shutdown.connect  # type: ignore[misc]
    async def mark_clean(sender: Any, **kwargs: Any) -> None:
        # faust stops its consumer (no more table writes) before this signal.
        await app.producer.flush()  # the buffer, then every send acknowledged by Kafka
        (tabledir / CLEAN_MARK).touch()
        log.info("%s: tables stopped cleanly; the next worker here reads them", tabledir)


class PartitionTable(MutableMapping[bytes, bytes]):
    """A faust bytes table as the window stages of one partition use it: reads and writes
    are the table's (a write goes to the partition of faust's current event, which is
    ``partition``'s when a stage runs), and :meth:`items_between` scans a key range of
    that partition's keys alone, in key order (windows/ranges.py: eviction reads what it
    drops, not every key of every partition)."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition

    def __getitem__(self, key: bytes) -> bytes:
        value: bytes = self.table[key]
        return value

    def get(self, key: bytes, default: Any = None) -> Any:
        return self.table.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.table

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.table[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self.table[key]

    def __iter__(self) -> Iterator[bytes]:  # every partition's keys, as the table's
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def items_between(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) with lo <= key < hi in key order: a seek and an ordered read of
        the partition's RocksDB database; with the memory store, a filter of its keys."""
        store = self.table.data
        db_for = getattr(store, "_db_for_partition", None)
        if db_for is None:  # faust's memory store: one dict for every partition
            return table_items_between(store.data, lo, hi)
        return _scan(db_for(self.partition), lo, hi, store.offset_key)


def _scan(db: Any, lo: bytes, hi: bytes, offset_key: bytes) -> Iterator[tuple[bytes, bytes]]:
    """A RocksDB database's (key, value) with lo <= key < hi, in key order, but faust's
    offset key. The read options live as long as the iterator: RocksDB keeps a pointer to
    the bound, and a freed one ended scans early at random."""
    bound = ReadOptions()
    bound.set_iterate_upper_bound(hi)  # RocksDB stops there, not at the next key past
    for key, value in db.items(from_key=lo, read_opt=bound):
        if key != offset_key:
            yield key, value
