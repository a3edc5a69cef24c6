"""The agents' records sent in record batches (pipeline/outputs.py), on the real broker:
each partition's records arrive as queued (keys, values, headers, order), split into
batches where they outgrow one, compressed as the worker's producer sends them; a batch
the broker refuses calls ``on_lost`` (the worker exits there, before any commit), and
one it takes never does."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.config import Settings
from streams.kafka.security import client_kwargs
from streams.pipeline.outputs import OutputBatches

from .harness import read_topic

pytestmark = pytest.mark.integration


async def _topics(settings: Settings, *specs: tuple[str, dict[str, str]]) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1, topic_configs=configs)
                                   for name, configs in specs])
    finally:
        await admin.close()


def _record(topic: str, partition: int, k: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return (b"%s-%d-k%d" % (topic.encode(), partition, k), bytes([k % 251]) * (40 + k % 90),
            [("ioacct-source-offset", b"%d" % k)] if k % 3 else [])


async def _in_order(settings: Settings, compression: str | None) -> None:
    stats, billing = (f"tob-{uuid.uuid4().hex[:8]}-{name}" for name in ("stats", "billing"))
    await _topics(settings, (stats, {}), (billing, {}))
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all",
                                compression_type=compression)
    await producer.start()
    lost: list[int] = []
    outputs = OutputBatches(lambda: producer, batch_bytes=600,  # most sends take several
                            on_lost=lambda: lost.append(1))
    queued: dict[tuple[str, int], list[tuple[bytes, bytes, list[tuple[str, bytes]]]]] = {}
    try:
        for round_ in range(3):  # sends interleaved with queuing, as the agents do
            for topic, partition, n in ((stats, 0, 25), (billing, 1, 3), (stats, 1, 8),
                                        (stats, 0, 4)):
                for k in range(n):
                    record = _record(topic, partition, 100 * round_ + k)
                    outputs.add(topic, partition, *record)
                    queued.setdefault((topic, partition), []).append(record)
            await outputs.send()
            assert not outputs.queued
        await producer.flush()
    finally:
        await producer.stop()
    assert lost == []
    assert outputs.records == sum(map(len, queued.values()))
    assert outputs.batches > 12  # they were split (12 sends of one partition each, at least)
    for topic in (stats, billing):
        messages = await read_topic(settings, topic)
        for partition in (0, 1):
            got = [(m.key, m.value, [(h, bytes(v)) for h, v in m.headers])
                   for m in messages if m.partition == partition]
            assert got == [(k, v, list(h)) for k, v, h in queued.get((topic, partition), [])]


@pytest.mark.parametrize("compression", [None, "zstd"])  # zstd: the worker's default
def test_each_partitions_records_arrive_as_queued(pipeline_settings: Settings,
                                                  compression: str | None) -> None:
    asyncio.run(_in_order(pipeline_settings, compression))


async def _refused(settings: Settings) -> None:
    small = f"tob-{uuid.uuid4().hex[:8]}-small"
    await _topics(settings, (small, {"max.message.bytes": "2000"}))
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    lost: list[str] = []
    outputs = OutputBatches(lambda: producer, on_lost=lambda: lost.append("lost"))
    try:
        outputs.add(small, 0, b"fits", b"x" * 100)
        await outputs.send()
        await producer.flush()
        assert lost == []
        outputs.add(small, 1, b"too large", b"x" * 8000)  # RecordTooLarge: never retried
        await outputs.send()
        for _ in range(300):
            if lost:
                break
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    assert lost == ["lost"]


def test_a_batch_the_broker_refuses_is_reported_lost(pipeline_settings: Settings) -> None:
    asyncio.run(_refused(pipeline_settings))


async def _bounded(settings: Settings) -> None:
    topic = f"tob-{uuid.uuid4().hex[:8]}-bounded"
    await _topics(settings, (topic, {}))
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    # nothing may stay unacknowledged: each partition's batch waits for the one before
    outputs = OutputBatches(lambda: producer, in_flight_bytes=0)
    try:
        for partition in (0, 1, 0):
            outputs.add(topic, partition, b"k%d" % partition, b"v" * 500)
            await outputs.send()
            (fut, size), = outputs.in_flight  # the one just handed over, and no other
            assert size > 500 and outputs.in_flight_total == size
        await producer.flush()
        assert fut.done() and not fut.exception()
    finally:
        await producer.stop()
    assert len(await read_topic(settings, topic)) == 3


def test_records_in_flight_are_bounded(pipeline_settings: Settings) -> None:
    asyncio.run(_bounded(pipeline_settings))
