"""A dead letter that cannot be published whole is never fatal, on the real broker.

The topics are created here before the worker starts (it creates only missing ones), with
a raw topic that takes more than the worker can send again and a dead-letter topic that
takes little: the two ways a dead letter fails, the producer refusing it at ``send``
(larger than its max_request_size) and the broker refusing it afterwards (larger than the
topic's max.message.bytes). The worker must send a minimal dead letter instead, keep
going and commit past both; and when even that is refused, log it, count it, and still
keep going."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from streams.config import Settings
from streams.core.codec import CodecError, default_schemas
from streams.kafka.topics import topic_specs, worker_max_request_bytes
from streams.pipeline.publish import TOO_LARGE
from tests.hostile import GOOD, batch
from tests.oracles.counters import counters_oracle

from .harness import WorkerProcess, read_topic, running_worker, wait_committed

pytestmark = pytest.mark.integration

SCHEMAS = default_schemas()
VOLUME, TENANT = "vol-limits", "tenant-l"
SMALL_DLQ_BYTES = 4096  # far below a dead letter that carries a 20 KB record whole
RAW_TOPIC_BYTES = 8 << 20  # more than the worker's producer may send (2 MiB by default)


async def _create_topics(settings: Settings) -> None:
    overrides = {settings.raw_topic: {"max.message.bytes": str(RAW_TOPIC_BYTES)},
                 settings.dlq_topic: {"max.message.bytes": str(SMALL_DLQ_BYTES)}}
    specs = [replace(s, config={**s.config, **overrides.get(s.name, {})})
             for s in topic_specs(settings)]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(s.name, s.partitions, s.replication_factor,
                                            topic_configs=s.config) for s in specs])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def worker(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    asyncio.run(_create_topics(pipeline_settings))
    with running_worker(pipeline_settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


async def _send(settings: Settings, values: list[bytes]) -> list[int]:
    """The values to the raw topic, keyed by the volume (one partition, in order); their
    offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                max_request_size=RAW_TOPIC_BYTES)
    await producer.start()
    try:
        return [(await producer.send_and_wait(settings.raw_topic, value=v,
                                              key=VOLUME.encode())).offset for v in values]
    finally:
        await producer.stop()


def _good(seq: int) -> bytes:
    return SCHEMAS.encode("IoBatch", batch(VOLUME, TENANT, seq, [GOOD]))


def _garbage(size: int) -> bytes:
    return random.Random(size).randbytes(size)  # not Avro: rejected whole, with its payload


def _dead_letters(settings: Settings) -> list[dict[str, Any]]:
    found = []
    for message in asyncio.run(read_topic(settings, settings.dlq_topic)):
        try:
            found.append(SCHEMAS.decode(message.value, expect="DeadLetter")[1])
        except CodecError:
            pass  # a probe of this test (below), not a dead letter
    return found


def _counted(worker: WorkerProcess, good: int) -> None:
    wanted = counters_oracle([{**GOOD, "volume_id": VOLUME, "tenant_id": TENANT}] * good)
    status, counters = worker.get(f"/volumes/{VOLUME}/counters")
    assert status == 200
    assert counters == {**counters, **wanted[VOLUME]}


def test_an_unpublishable_dead_letter_is_sent_minimal(
    pipeline_settings: Settings, worker: WorkerProcess,
) -> None:
    broker_refuses = _garbage(20_000)  # the producer sends it; the DLQ topic refuses it
    producer_refuses = _garbage(worker_max_request_bytes(pipeline_settings) + 4096)
    offsets = asyncio.run(_send(pipeline_settings, [
        _good(0), broker_refuses, producer_refuses, _good(1)]))
    wait_committed(pipeline_settings, [worker], 180)
    assert worker.alive(), worker.log_tail()

    dead = sorted(_dead_letters(pipeline_settings), key=lambda d: d["source_offset"])
    assert [d["source_offset"] for d in dead] == offsets[1:3], dead
    for record in dead:
        assert record["reason"].startswith(TOO_LARGE), record["reason"]
        assert "MessageSizeTooLargeError" in record["reason"]
        assert "not Avro single-object encoded" in record["reason"]  # the original reason
        assert record["payload"] is None and record["event_json"] is None
        assert record["source_topic"] == pipeline_settings.raw_topic
        assert len(record["reason"]) <= 1024
    # Refused by the producer at send (its own limit), then by the broker (the topic's).
    assert "max_request_size" in dead[1]["reason"] and "max_request_size" not in dead[0]["reason"]
    _counted(worker, 2)
    assert worker.get("/status")[1]["dead_letters_failed"] == 0


async def _shrink_dlq(settings: Settings, max_bytes: int) -> None:
    """The DLQ topic's max.message.bytes lowered, and the broker seen to apply it: a probe
    of the same size as the minimal dead letter is refused."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, settings.dlq_topic,
            {"max.message.bytes": str(max_bytes)})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for _ in range(300):
            try:
                await producer.send_and_wait(settings.dlq_topic, b"probe" * 40)
            except MessageSizeTooLargeError:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{settings.dlq_topic} still takes {max_bytes}+ byte records")
    finally:
        await producer.stop()


def test_a_dead_letter_not_even_minimal_is_logged_and_counted(
    pipeline_settings: Settings, worker: WorkerProcess,
) -> None:
    before = _dead_letters(pipeline_settings)
    asyncio.run(_shrink_dlq(pipeline_settings, 64))  # below any dead letter
    offsets = asyncio.run(_send(pipeline_settings, [_garbage(20_001), _good(2)]))
    wait_committed(pipeline_settings, [worker], 180)
    assert worker.alive(), worker.log_tail()

    assert worker.get("/status")[1]["dead_letters_failed"] == 1
    line = next(line for line in worker.log_path.read_text(errors="replace").splitlines()
                if "not published, not even minimal" in line)
    assert f"{pipeline_settings.raw_topic}[" in line and f"]@{offsets[0]} " in line, line
    assert "ERROR" in line, line
    assert _dead_letters(pipeline_settings) == before
    _counted(worker, 3)
