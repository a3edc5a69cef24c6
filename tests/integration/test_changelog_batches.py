"""A table's changelog sent in record batches (pipeline/changelogs.py), on the real broker:
the messages are the writes, in their order, split into batches where they outgrow one;
deletes are tombstones; the persisted offset is each partition's last acknowledged
message; the send ledger lands each write call once all its batches did; the same
compressed, as the worker's producer sends them (IOACCT_KAFKA_COMPRESSION)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rocksdict import Options, Rdict

from streams.config import Settings
from streams.kafka.security import client_kwargs
from streams.pipeline.changelogs import ChangelogBatches
from streams.pipeline.checkpoints import SendLedger

from .harness import read_topic

pytestmark = pytest.mark.integration


class _Store:
    """What ChangelogBatches uses of faust's RocksDB store: a database per partition (real
    RocksDB), faust's key index, and the persisted offset it keeps in each database."""

    offset_key = b"__faust\0offset__"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dbs: dict[int, Rdict] = {}
        self._key_index: dict[bytes, int] = {}

    def _db_for_partition(self, partition: int) -> Rdict:
        if partition not in self._dbs:
            self._dbs[partition] = Rdict(str(self.root / f"p{partition}"),
                                         Options(raw_mode=True))
        return self._dbs[partition]

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self._db_for_partition(tp.partition)[self.offset_key] = str(offset).encode()

    def persisted(self, partition: int) -> int:
        return int(self._db_for_partition(partition)[self.offset_key])

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class _Table:
    def __init__(self, store: _Store, topic: str) -> None:
        self.data = store
        self.changelog_topic = _Topic(topic)


def _writes(partition: int, n: int, size: int) -> list[tuple[bytes, bytes | None]]:
    """n writes of ``size``-byte values, every fifth a delete of an earlier key."""
    return [(b"p%d-k%d" % (partition, k // 5 * 5 if k % 5 == 4 else k),
             None if k % 5 == 4 else bytes([k % 251]) * size) for k in range(n)]


async def _run(settings: Settings, tmp: Path, compression: str | None) -> None:
    topic = f"tcb-{uuid.uuid4().hex[:8]}-changelog"
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all",
                                compression_type=compression)
    await producer.start()
    store = _Store(tmp)
    ledger = SendLedger()
    # 700-byte batches: most write calls below take several
    batches = ChangelogBatches(_Table(store, topic), lambda: producer, ledger, batch_bytes=700)
    calls = [(0, _writes(0, 12, 100)), (1, _writes(1, 3, 50)), (0, []),
             (0, _writes(0, 7, 2000)), (1, _writes(1, 40, 30))]
    try:
        for partition, writes in calls:
            batches.write(partition, writes)
            # on disk at once, as faust's store would have them
            final = dict(writes)
            db = store._db_for_partition(partition)
            assert {key: db.get(key) for key in final} == final
        issued = ledger.issued
        assert issued == 4  # an empty call issues nothing (nothing would land it)
        await batches.send()
        assert not batches.queued
        await producer.flush()
        assert await ledger.wait_landed(issued, 30)
        assert batches.failed == 0
        assert batches.batches > len(calls)  # they were split
    finally:
        await producer.stop()
    messages = await read_topic(settings, topic)
    for partition in (0, 1):
        got = [(m.key, m.value) for m in messages if m.partition == partition]
        sent = [w for p, writes in calls if p == partition for w in writes]
        assert got == sent
        last = max(m.offset for m in messages if m.partition == partition)
        assert store.persisted(partition) == last
    store.close()


@pytest.mark.parametrize("compression", [None, "zstd"])  # zstd: the worker's default
def test_changelog_batches_are_the_writes_in_order(pipeline_settings: Settings,
                                                   tmp_path: Path, compression: str | None
                                                   ) -> None:
    asyncio.run(_run(pipeline_settings, tmp_path, compression))
