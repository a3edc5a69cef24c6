"""CPU time of one eviction of a partition's 1 s windows, over faust's RocksDB store (the
worker's table: rocksdict, faust's options), with ``retained_s`` of 1 s windows of
``volumes`` volumes stored, the watermark moved on by EVICT_EVERY_NS (60 s) per call as
the worker's ticks do: each call drops 60 windows per volume. Not a test (no wall-clock
thresholds in tests): run it by hand,

    python -m tests.unit.core.windows.bench_evict [volumes] [retained_s] [calls]

It drives ``PartitionWindows._evict`` and then the unit's commit of the deletes, through
the stage's JournaledTable over the store as the worker's table (any code version since
session 9: run it from a checkout of the code before to compare). Only one partition's
database is filled; before session 10 an eviction also read every other partition's
keys, so a worker owning several partitions paid that many times more.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import faust
import orjson

from streams.core.times import NS_PER_S
from streams.core.windows.acc import WindowAcc
from streams.core.windows.book import WindowEntry, WindowSettings
from streams.core.windows.stages import EVICT_EVERY_NS
from streams.pipeline.batches import writing_for
from streams.state.stages import open_partition_windows

T0 = 1_700_000_000 * NS_PER_S


class StoreTable(MutableMapping[bytes, bytes]):
    """faust's table over its RocksDB store, less the changelog sends (the same for any
    key layout): reads, writes, deletes and iteration are the store's."""

    def __init__(self, store: Any) -> None:
        self.data = store

    def __getitem__(self, key: bytes) -> bytes:
        value = self.data[key]
        if value is None:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def _table(tabledir: str) -> Any:
    app = faust.App("bench-evict", store="rocksdb://", tabledir=tabledir, autodiscover=False)
    store = app.Table("windows", key_type=bytes, value_type=bytes, partitions=8,
                      default=None).data
    store._dbs_for_actives = lambda: iter(list(store._dbs.values()))  # partition 0 assigned
    try:
        from streams.pipeline.tables import PartitionTable  # session 10's range scans
        return PartitionTable(StoreTable(store), 0)
    except ImportError:
        return StoreTable(store)


def _filled(table: Any, volumes: int, retained_s: int) -> None:
    """``retained_s`` emitted 1 s windows per volume, as the stage keys and packs them,
    straight into partition 0's database; the clock where the oldest are just kept."""
    stage = open_partition_windows(0, table, WindowSettings())
    store = stage.books[0].store
    acc = WindowAcc.empty(T0, NS_PER_S)
    acc.ops[0].counts[0], acc.ops[0].counts[1] = 40, 40 * 4096
    value = store.encode(WindowEntry("tenant-0", acc, 1, True, 5))  # type: ignore[attr-defined]
    faust_table = table.table if hasattr(table, "partition") else table  # PartitionTable's
    db = faust_table.data._db_for_partition(0)
    for second in range(retained_s):
        start = T0 + second * NS_PER_S
        for v in range(volumes):
            db.put(store._key((f"vol-{v:06d}", start)), value)  # type: ignore[attr-defined]
    watermark = T0 + WindowSettings().horizon_ns + NS_PER_S  # nothing past it yet
    db.put(stage.clock_key, orjson.dumps([watermark, 0]))


def main(volumes: int = 1000, retained_s: int = 3600, calls: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tabledir:
        table = _table(tabledir)
        _filled(table, volumes, retained_s)
        event = type("Event", (), {"message": type("M", (), {"partition": 0})()})()
        with writing_for(event):
            stage = open_partition_windows(0, table, WindowSettings())
            for call in range(calls):
                assert stage.clock.watermark_ns is not None
                stage.clock.watermark_ns += EVICT_EVERY_NS
                cpu = time.process_time()
                stage._evict(None)
                evict_s = time.process_time() - cpu
                dropped = sum(1 for v in stage.table.pending.values()  # type: ignore[attr-defined]
                              if v is None)
                cpu = time.process_time()
                stage.table.commit()
                commit_s = time.process_time() - cpu
                print(f"{volumes} volumes x {retained_s} s retained, call {call}: evict "
                      f"{evict_s * 1e3:,.0f} ms CPU ({dropped:,} dropped, "
                      f"{evict_s / max(1, dropped) * 1e6:.1f} µs each), commit "
                      f"{commit_s * 1e3:,.0f} ms", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
