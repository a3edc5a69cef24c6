"""The worker's RocksDB databases share one block cache and one memtable budget, and
their files are compressed (pipeline/rocks.py), on real rocksdict databases."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import faust
import pytest
import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from streams.config import Settings
from streams.pipeline import rocks
from streams.pipeline.tables import store_url, table_options

MIB = 1 << 20


def _options(cache_bytes: int, memtables_bytes: int) -> rocks.SharedMemoryOptions:
    faust_options = RocksDBOptions(write_buffer_size=MIB, max_write_buffer_number=2,
                                   **{rocks.CACHE_KEY: cache_bytes,
                                      rocks.MEMTABLES_KEY: memtables_bytes})
    return rocks.SharedMemoryOptions.like(faust_options)


def _fill(db: Any, rng: random.Random, n: int, value_bytes: int, tag: bytes) -> dict[bytes, bytes]:
    written = {}
    for i in range(n):
        key, value = tag + i.to_bytes(4, "big"), rng.randbytes(value_bytes)
        db[key] = value
        written[key] = value
    return written


def test_all_databases_count_against_one_memtable_budget(tmp_path: Path) -> None:
    budget = 2 * MIB
    options = _options(4 * MIB, budget)
    cache, memtables = rocks.shared(4 * MIB, budget)
    assert rocks.shared(4 * MIB, budget) == (cache, memtables)  # one pair per process
    first, second = (options.open(tmp_path / f"p{n}.db") for n in range(2))
    rng = random.Random(7)
    before = memtables.get_usage()
    _fill(first, rng, 200, 1_000, b"a")
    after_one = memtables.get_usage()
    _fill(second, rng, 200, 1_000, b"b")
    assert before < after_one < memtables.get_usage()  # the second database counts too
    first.close()
    second.close()


def test_reads_of_all_databases_share_one_block_cache(tmp_path: Path) -> None:
    # 4 databases of 3 MiB each on disk, read whole: each with a cache of its own (faust's
    # way) would hold up to 4 x the capacity; the shared one stays at it.
    capacity = MIB
    options = _options(capacity, 64 * MIB)
    cache, _ = rocks.shared(capacity, 64 * MIB)
    rng = random.Random(1)
    for n in range(4):
        db = options.open(tmp_path / f"r{n}.db")
        values = _fill(db, rng, 3_000, 1_000, b"r")
        db.flush()
        db.compact_range(None, None)
        assert all(db[k] == v for k, v in values.items())
        assert capacity // 2 < cache.get_usage() <= capacity
        db.close()


def test_the_files_are_compressed(tmp_path: Path) -> None:
    db = _options(MIB, MIB).open(tmp_path / "c.db")
    rng = random.Random(3)
    words = [rng.randbytes(8) for _ in range(16)]  # values like windows: few distinct parts
    values = {i.to_bytes(4, "big"): b"".join(rng.choices(words, k=64)) for i in range(20_000)}
    for key, value in values.items():
        db[key] = value
    db.flush()
    db.compact_range(None, None)
    raw = sum(len(k) + len(v) for k, v in values.items())
    on_disk = sum(f.stat().st_size for f in (tmp_path / "c.db").glob("*.sst"))
    assert 0 < on_disk < raw / 3
    assert all(db[k] == v for k, v in values.items())
    db.close()
    read_only = _options(MIB, MIB).open(tmp_path / "c.db", read_only=True)  # as faust asks
    assert read_only[b"\0\0\0\7"] == values[b"\0\0\0\7"]
    with pytest.raises(Exception, match="(?i)read.?only|not supported"):
        read_only[b"new"] = b"x"
    read_only.close()


def test_the_workers_tables_open_their_databases_with_the_shared_options(
        tmp_path: Path) -> None:
    settings = Settings(table_block_cache_bytes=3 * MIB, table_memtables_bytes=5 * MIB)
    app = faust.App("test-rocks", store=store_url(settings), tabledir=str(tmp_path),
                    autodiscover=False)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=2,
                      options=table_options(settings))
    store = table.data
    assert isinstance(store, rocks.SharedMemoryStore)
    assert isinstance(store.rocksdb_options, rocks.SharedMemoryOptions)
    db = store._db_for_partition(1)
    db[b"k"] = b"v"
    assert db[b"k"] == b"v"
    _, memtables = rocks.shared(3 * MIB, 5 * MIB)
    assert memtables.get_buffer_size() == 5 * MIB
    db.close()


def test_rocksdbs_own_log_is_rolled_and_bounded(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # every flush logs ~250 bytes: 1,500 of them roll a 64 KiB LOG about five times
    monkeypatch.setattr(rocks, "INFO_LOG_BYTES", 64 * 1024)
    db = _options(MIB, MIB).open(tmp_path / "l.db")
    logs = tmp_path / "l.db"
    for i in range(1_500):
        db[i.to_bytes(4, "big")] = b"x"
        db.flush()
    db.close()
    written = [f for f in logs.iterdir() if f.name.startswith("LOG")]
    assert any(f.name.startswith("LOG.old.") for f in written)  # it did roll
    assert len(written) <= rocks.INFO_LOGS_KEPT + 1
    assert all(f.stat().st_size <= rocks.INFO_LOG_BYTES + 64 * 1024 for f in written)


def test_reads_of_absent_keys_rarely_pass_the_bloom_filter(tmp_path: Path) -> None:
    # RocksDB's own statistics count the filter's answers for keys between those written
    # (absent): faust's 3 bits a key let ~24 % of them through to a data block.
    options = _options(MIB, 64 * MIB).as_options()
    options.enable_statistics()
    db = rocksdict.Rdict(str(tmp_path / "b.db"), options=options)
    for i in range(50_000):
        db[b"k%08d" % (2 * i)] = b"v"
    db.flush()
    absent = 20_000
    assert all(db.get(b"k%08d" % (2 * i + 1)) is None for i in range(absent))
    stats = dict(line.split(" COUNT : ") for line in options.get_statistics().splitlines()
                 if " COUNT : " in line)
    useful = int(stats["rocksdb.bloom.filter.useful"])
    passed = int(stats["rocksdb.bloom.filter.full.positive"])
    asked = useful + passed
    assert asked >= absent  # every read asked the filter (rocksdict's get may ask twice)
    assert passed / asked < 0.03, (passed, asked)  # ~1 % at 10 bits a key
    db.close()
