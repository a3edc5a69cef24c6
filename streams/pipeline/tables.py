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
from pathlib import Path
from typing import Any

from streams.config import Settings

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
