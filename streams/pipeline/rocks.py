"""The worker's RocksDB memory and disk: one budget for all its tables, compressed files.

faust opens a RocksDB database per table partition, each with a block cache and
memtables of its own, so a worker's RocksDB memory grew with the partitions it owned
(2 tables x 8 partitions x (2 x 1 MiB + 4 MiB) = 96 MiB) and filled as it wrote: most of
(f)'s and (j)'s RSS growth in docs/performance.md. Here every database of the process
shares one block cache (``IOACCT_TABLE_BLOCK_CACHE_BYTES``) and one write buffer budget
(``IOACCT_TABLE_MEMTABLES_BYTES``: past it RocksDB flushes the memtable being written to
disk), the files are compressed (zstd), their bloom filters have 10 bits a key and
RocksDB's own log is bounded.

The store is faust's own (``faust.stores.rocksdb.Store``); only the options it opens a
database with differ, registered under ``ioacct-rocksdb://`` (:func:`register`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rocksdict
from faust.stores import STORES
from faust.stores.rocksdb import RocksDBOptions, Store

SCHEME = "ioacct-rocksdb"
# Per table options (tables.table_options) that faust's RocksDBOptions keeps as extras.
CACHE_KEY, MEMTABLES_KEY = "shared_block_cache_bytes", "shared_memtables_bytes"

INFO_LOG_BYTES, INFO_LOGS_KEPT = 512 << 10, 2  # each database's LOG, rolled, and old ones kept
# The bloom filter's bits a key: faust's default of 3 lets ~24 % of the reads of an absent
# key through to a data block (a disk read when no cache holds it); nearly every window
# read at 100,000 volumes is of one (docs/performance.md). 10 let ~1 % through, for
# 1.25 bytes a key held with each file's reader (~4.5 MB for an hour of 1,000 volumes'
# 1 s windows).
BLOOM_BITS_PER_KEY = 10
# (cache bytes, memtable bytes) -> the process's cache and write buffer manager.
_SHARED: dict[tuple[int, int], tuple[rocksdict.Cache, rocksdict.WriteBufferManager]] = {}


def shared(cache_bytes: int, memtables_bytes: int
           ) -> tuple[rocksdict.Cache, rocksdict.WriteBufferManager]:
    """The one block cache and write buffer manager of this process for these sizes."""
    key = (cache_bytes, memtables_bytes)
    if key not in _SHARED:
        # allow_stall=False: past the budget RocksDB flushes; it never blocks a write.
        _SHARED[key] = (rocksdict.Cache(cache_bytes),
                        rocksdict.WriteBufferManager(memtables_bytes, False))
    return _SHARED[key]


class SharedMemoryOptions(RocksDBOptions):
    """faust's RocksDB options, with the process's shared cache and write buffer budget
    and compressed files (rocksdict only: faust's other driver is not installed)."""

    @classmethod
    def like(cls, options: RocksDBOptions) -> SharedMemoryOptions:
        made = cls.__new__(cls)
        made.__dict__.update(options.__dict__)
        return made

    def as_options(self) -> Any:
        cache, memtables = shared(int(self.extra_options[CACHE_KEY]),
                                  int(self.extra_options[MEMTABLES_KEY]))
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_write_buffer_manager(memtables)
        # zstd: a third smaller than lz4 on stored windows; RocksDB compresses in its own
        # threads, off the worker's.
        options.set_compression_type(rocksdict.DBCompressionType.zstd())
        # RocksDB's info log (LOG) grew ~3 MB an hour per database, without end.
        options.set_max_log_file_size(INFO_LOG_BYTES)
        options.set_keep_log_file_num(INFO_LOGS_KEPT)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)  # a full filter per file
        table.set_block_cache(cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options

    def open(self, path: Path, *, read_only: bool = False) -> Any:
        """As faust opens it (no TTL: the tables never ask for one)."""
        access = rocksdict.AccessType.read_only() if read_only else (
            rocksdict.AccessType.read_write())
        db = rocksdict.Rdict(str(path), options=self.as_options(), access_type=access)
        db.set_read_options(rocksdict.ReadOptions())
        return db


class SharedMemoryStore(Store):
    """faust's RocksDB store opening its databases with :class:`SharedMemoryOptions`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rocksdb_options = SharedMemoryOptions.like(self.rocksdb_options)


def register() -> str:
    """Make ``ioacct-rocksdb://`` name :class:`SharedMemoryStore`; returns the URL."""
    STORES.aliases[SCHEME] = f"{__name__}:{SharedMemoryStore.__name__}"
    return f"{SCHEME}://"
