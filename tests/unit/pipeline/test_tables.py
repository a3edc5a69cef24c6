"""The tables' store settings, and a worker's local tables kept only after a clean stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faust.stores.rocksdb import RocksDBOptions
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import Settings
from streams.pipeline.changelogs import batched_changelogs
from streams.pipeline.tables import (
    CLEAN_MARK,
    IN_MEMORY,
    KEPT,
    REBUILT,
    PartitionTable,
    open_tables_dir,
    store_url,
    table_options,
)


def test_the_store_is_rocksdb_by_default_and_memory_on_request() -> None:
    assert store_url(Settings()) == "ioacct-rocksdb://"  # faust's store, shared memory
    assert store_url(Settings(table_store="memory")) == "memory://"
    assert table_options(Settings(table_store="memory")) is None
    options = table_options(Settings(table_write_buffer_bytes=1 << 20))
    assert options is not None and options["write_buffer_size"] == 1 << 20
    assert table_options(Settings()) is not table_options(Settings())  # faust pops from it


def test_an_unknown_store_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="IOACCT_TABLE_STORE='disk' is not one of"):
        store_url(Settings(table_store="disk"))


def _tables(tmp_path: Path) -> Path:
    tables = tmp_path / "tables"
    (tables / "ioacct-windows-0.db").mkdir(parents=True)
    (tables / "ioacct-windows-0.db" / "CURRENT").write_text("x")
    return tables


def test_tables_left_by_a_clean_stop_are_kept_and_the_mark_taken(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    (tables / CLEAN_MARK).touch()
    assert open_tables_dir(Settings(), tables) == KEPT
    assert (tables / "ioacct-windows-0.db" / "CURRENT").exists()
    assert not (tables / CLEAN_MARK).exists()  # running now: a kill leaves no mark


def test_tables_left_by_a_killed_worker_are_dropped(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    assert open_tables_dir(Settings(), tables) == REBUILT  # no checkpoint to restore
    assert tables.exists() and [p.name for p in tables.iterdir()] == []


def test_the_memory_store_leaves_the_directory_alone(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    assert open_tables_dir(Settings(table_store="memory"), tables) == IN_MEMORY
    assert (tables / "ioacct-windows-0.db" / "CURRENT").exists()


class _RocksStore:
    """faust's RocksDB store as PartitionTable reads it: a database per partition, opened
    with faust's own options (raw keys, its bloom filter and block cache), and faust's
    offset key in each."""

    offset_key = b"__faust\0offset__"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dbs: dict[int, Any] = {}

    def _db_for_partition(self, partition: int) -> Any:
        if partition not in self.dbs:
            self.dbs[partition] = RocksDBOptions().open(self.path / f"t-{partition}.db")
            self.dbs[partition].put(self.offset_key, b"12")
        return self.dbs[partition]


class _FaustTable(dict):  # type: ignore[type-arg]
    """The table's mapping side (all partitions); ``data``: its store."""

    data: Any


KEYS = st.binary(min_size=0, max_size=6)


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.tuples(st.integers(0, 2), KEYS), max_size=40),
       lo=KEYS, hi=KEYS, deleted=st.data())
def test_a_partition_tables_range_scan_reads_its_partitions_database_in_key_order(
    tmp_path_factory: pytest.TempPathFactory, keys: list[tuple[int, bytes]], lo: bytes,
    hi: bytes, deleted: st.DataObject,
) -> None:
    """Against a filter of every key the partition holds: other partitions' keys and
    faust's offset key are never read, deletes are gone, the bound is exclusive."""
    store = _RocksStore(tmp_path_factory.mktemp("rocks"))
    held: dict[int, dict[bytes, bytes]] = {0: {}, 1: {}, 2: {}}
    for n, (partition, key) in enumerate(keys):
        store._db_for_partition(partition).put(key, b"%d" % n)
        held[partition][key] = b"%d" % n
    for partition, key in deleted.draw(st.lists(st.sampled_from(keys), max_size=4)) if keys else []:
        store._db_for_partition(partition).delete(key)
        held[partition].pop(key, None)
    faust_table = _FaustTable()
    faust_table.data = store
    for partition in (0, 1):
        got = list(PartitionTable(faust_table, partition).items_between(lo, hi))
        assert got == sorted((k, v) for k, v in held[partition].items() if lo <= k < hi)
    for db in store.dbs.values():
        db.close()


def test_a_partition_table_of_the_memory_store_filters_its_keys() -> None:
    faust_table = _FaustTable({b"0|a": b"1", b"1|a": b"2", b"0|c": b"3"})
    faust_table.data = type("MemoryStore", (), {"data": dict(faust_table)})()
    table = PartitionTable(faust_table, 0)
    assert list(table.items_between(b"0|", b"0}")) == [(b"0|a", b"1"), (b"0|c", b"3")]
    table[b"0|b"] = b"4"
    del table[b"0|a"]
    assert faust_table == {b"1|a": b"2", b"0|c": b"3", b"0|b": b"4"}
    assert table[b"0|b"] == b"4" and table.get(b"0|a") is None and b"0|c" in table


def test_changelogs_go_in_batches_only_with_rocksdb_and_at_least_once() -> None:
    """The memory store keeps no persisted offsets and exactly_once sends through a
    transactional producer per partition: both keep faust's send per write."""
    assert batched_changelogs(Settings())
    assert not batched_changelogs(Settings(table_store="memory"))
    assert not batched_changelogs(Settings(processing_guarantee="exactly_once"))


class _Table:
    """What ChangelogBatches reads of a faust table (nothing is written here)."""

    class changelog_topic:  # noqa: N801 (faust's attribute)
        @staticmethod
        def get_topic_name() -> str:
            return "t-changelog"

    data = None


WRITES = st.lists(st.tuples(st.binary(min_size=1, max_size=40),
                            st.none() | st.binary(max_size=3_000)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(writes=WRITES, batch_bytes=st.sampled_from([200, 4_096, 65_536]),
       compression=st.sampled_from([None, "zstd"]))
def test_a_write_said_to_land_whole_fits_in_one_of_aiokafkas_record_batches(
        writes: list[tuple[bytes, bytes | None]], batch_bytes: int, compression: str | None
) -> None:
    """ChangelogBatches.lands_whole's bound against aiokafka's own batch (the one
    send_in_batches fills): a write call it says lands whole goes in one batch, which the
    log appends all or none (the journal then holds no copy: state/journal.py)."""
    from aiokafka.producer.message_accumulator import BatchBuilder

    from streams.pipeline.changelogs import ChangelogBatches

    batches = ChangelogBatches(_Table(), lambda: None, batch_bytes=batch_bytes)
    table = PartitionTable(_Table(), 0, batches)
    assert not PartitionTable(_Table(), 0, None).lands_whole(writes)  # faust's way
    # It stops reading at the bound, and says what summing them all would say.
    whole = table.lands_whole(iter(writes))
    assert whole == (61 + sum(32 + len(key) + len(value or b"") for key, value in writes)
                     <= batch_bytes)
    if not whole:
        return
    batch = BatchBuilder(batch_bytes, {None: 0, "zstd": 4}[compression])
    for key, value in writes:
        assert batch.append(key=key, value=value, timestamp=None, headers=[]) is not None
