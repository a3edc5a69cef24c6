"""Where the worker's tables live: faust's RocksDB store (rocksdict) on the worker's data
dir, or its in-memory store (``IOACCT_TABLE_STORE``).

With RocksDB a restarted worker reads its tables from disk and only the changelog's tail
(faust keeps each partition's changelog offset in the partition's database). As they are
when it stopped, that holds only after a clean stop: faust writes a table value to RocksDB
at once and to the changelog later, so a worker killed in between has values on disk that
the changelog never got. A worker that then skipped the record again (the replay checks)
would keep them on disk alone, and the next owner of the partition would not see them. So
the tables directory is marked clean once a stopping worker's changelog writes were all
acknowledged. A worker that starts without that mark (killed, crashed, out of power)
restores the newest valid checkpoint of its tables (checkpoints.py: one taken every
``IOACCT_TABLE_CHECKPOINT_S`` and made valid once its changelog writes landed) and reads
the changelog from there; with none (or checkpoints off) it drops its local tables and
rebuilds them from the changelog, as the memory store always does.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from rocksdict import ReadOptions

from streams.config import Settings
from streams.core.windows.ranges import table_items_between
from streams.pipeline import rocks
from streams.pipeline.changelogs import ChangelogBatches
from streams.pipeline.checkpoints import (
    SendLedger,
    TableCheckpoints,
    drop_checkpoints,
    restore_newest,
    watch_sends,
)
from streams.state.journal import Write, write_each

log = logging.getLogger(__name__)
TABLE_STORES = ("rocksdb", "memory")
CLEAN_MARK = "STOPPED-CLEANLY"
LAND_WAIT_S = 60.0  # how long a checkpoint or a clean stop waits for its changelog writes
# How the tables were found at start (GET /status tables_at_start).
KEPT, RESTORED, REBUILT, IN_MEMORY = "kept", "restored", "rebuilt", "memory"


def store_url(settings: Settings) -> str:
    if settings.table_store not in TABLE_STORES:
        raise ValueError(f"IOACCT_TABLE_STORE={settings.table_store!r} is not one of "
                         f"{'/'.join(TABLE_STORES)}")
    return rocks.register() if settings.table_store == "rocksdb" else f"{settings.table_store}://"


def table_options(settings: Settings) -> dict[str, Any] | None:
    """Each table's RocksDB options (a new dict per table: faust's store pops from it)."""
    if settings.table_store != "rocksdb":
        return None
    return {"write_buffer_size": settings.table_write_buffer_bytes,
            "max_write_buffer_number": 2,
            rocks.CACHE_KEY: settings.table_block_cache_bytes,
            rocks.MEMTABLES_KEY: settings.table_memtables_bytes}


def checkpoints_on(settings: Settings) -> bool:
    """Checkpoints need RocksDB, and acknowledged writes that stay (checkpoints.py)."""
    return (settings.table_store == "rocksdb" and settings.table_checkpoint_s > 0
            and settings.processing_guarantee == "at_least_once")


def open_tables_dir(settings: Settings, tabledir: Path) -> str:
    """Before the app starts: keep the local tables if the last worker on ``tabledir``
    stopped cleanly, else restore the newest valid checkpoint, else drop them (module
    doc); returns which (KEPT, RESTORED, REBUILT, IN_MEMORY). The mark is taken away: this
    worker is running now."""
    if settings.table_store != "rocksdb":
        return IN_MEMORY
    mark = tabledir / CLEAN_MARK
    found = KEPT if mark.exists() else REBUILT
    if found == KEPT:
        mark.unlink()
        drop_checkpoints(tabledir)
    elif tabledir.exists() and checkpoints_on(settings):
        restored = restore_newest(tabledir)
        if restored is not None:
            found = RESTORED
        log.warning("%s: the last worker here did not stop cleanly; its tables are %s",
                    tabledir, f"restored from {restored.name} and brought up to date from "
                    "the changelog" if restored else "rebuilt from the changelog (no "
                    "valid checkpoint)")
    elif tabledir.exists():
        log.warning("%s: the last worker here did not stop cleanly; its tables are "
                    "dropped and rebuilt from the changelog", tabledir)
        shutil.rmtree(tabledir)
    tabledir.mkdir(parents=True, exist_ok=True)
    return found


def _open_databases(tables: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """(directory name, open Rdict) of every partition of ``tables`` faust has open."""
    for table in tables:
        store = table.data
        for partition, db in list(store._dbs.items()):
            yield store.partition_path(partition).name, db


def keep_tables_safe(app: Any, settings: Settings, tabledir: Path,
                     tables: Iterable[Any], ledger: SendLedger | None = None
                     ) -> TableCheckpoints | None:
    """Count the tables' changelog writes and mark ``tabledir`` clean when the app stops
    once they all landed; the checkpoints to take while it runs (None: checkpoints_on
    says no; timers.py takes them)."""
    if settings.table_store != "rocksdb":
        return None
    tables = list(tables)
    ledger = ledger or SendLedger()  # the batched changelog sends count in it too
    for table in tables:
        watch_sends(table, ledger)

    @app.on_before_shutdown.connect  # type: ignore[misc]
    async def mark_clean(sender: Any, **kwargs: Any) -> None:
        # faust stops its consumer (no more table writes) before this signal.
        await app.producer.flush()  # faust's flush may return early: the ledger tells
        if await ledger.wait_landed(ledger.issued, LAND_WAIT_S):
            (tabledir / CLEAN_MARK).touch()
            log.info("%s: tables stopped cleanly; the next worker here reads them", tabledir)
        else:
            log.warning("%s: changelog writes did not land: not marked clean", tabledir)

    if not checkpoints_on(settings):
        return None
    checkpoints = TableCheckpoints(tabledir, lambda: _open_databases(tables), ledger)
    return checkpoints


class PartitionTable(MutableMapping[bytes, bytes]):
    """A faust bytes table as the window stages of one partition use it: reads and writes
    are the table's (a write goes to the partition of faust's current event, which is
    ``partition``'s when a stage runs), and :meth:`items_between` scans a key range of
    that partition's keys alone, in key order (windows/ranges.py: eviction reads what it
    drops, not every key of every partition)."""

    def __init__(self, table: Any, partition: int, batches: ChangelogBatches | None = None
                 ) -> None:
        self.table = table
        self.partition = partition
        self.batches = batches  # None: faust's own changelog send per write

    def lands_whole(self, writes: Iterable[Write]) -> bool:
        """Whether :meth:`write_many` of ``writes`` lands all or none: in one record batch
        (changelogs.py); never faust's way, a message at a time."""
        return self.batches is not None and self.batches.lands_whole(writes)

    def write_many(self, writes: list[Write]) -> None:
        """A unit's writes, in order (state/journal.py ``write_all``): their changelog
        messages in batches (changelogs.py), or faust's way, one by one."""
        if self.batches is not None:
            self.batches.write(self.partition, writes)
        else:
            write_each(self, writes)

    def __getitem__(self, key: bytes) -> bytes:
        value: bytes = self.table[key]
        return value

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """The values of ``keys`` (None: none): straight from the partition's RocksDB
        database, as faust's own read in a stage does (the current event's partition is
        this one), less its bookkeeping per key (~5 % of a worker's time at 100,000
        volumes); with the memory store, faust's reads."""
        db_for = getattr(self.table.data, "_db_for_partition", None)
        if db_for is None:
            return [self.table.get(key) for key in keys]
        get = db_for(self.partition).get
        return [get(key) for key in keys]

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
