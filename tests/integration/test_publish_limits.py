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
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from streams.api import tokens
from streams.api.auth import TENANT as TENANT_ROLE
from streams.config import Settings
from streams.core.codec import CodecError, default_schemas
from streams.kafka.security import client_kwargs
from streams.kafka.topics import TopicSpec, topic_specs, worker_max_request_bytes
from streams.pipeline.publish import TOO_LARGE
from tests.hostile import GOOD, batch
from tests.oracles.counters import counters_oracle

from .harness import (
    WorkerProcess,
    ioacct,
    read_topic,
    register,
    running_worker,
    wait_committed,
    wait_until,
)

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
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
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
    register(pipeline_settings, [(VOLUME, TENANT)])
    with running_worker(pipeline_settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


async def _send(settings: Settings, values: list[bytes]) -> list[int]:
    """The values to the raw topic, keyed by the volume (one partition, in order); their
    offsets."""
    producer = AIOKafkaProducer(**client_kwargs(settings),
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
    over_producer_limit = _garbage(worker_max_request_bytes(pipeline_settings) + 4096)  # ditto
    offsets = asyncio.run(_send(pipeline_settings, [
        _good(0), broker_refuses, over_producer_limit, _good(1)]))
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
    # Both refused by the topic: a dead letter carries at most a 4 KiB prefix of its record
    # (core/ingest.py), so even the record over the producer's own limit makes one the
    # producer sends, and the topic's 4 KiB limit refuses.
    assert all("max_request_size" not in d["reason"] for d in dead)
    _counted(worker, 2)
    assert worker.get("/status")[1]["dead_letters_failed"] == 0


async def _shrink_dlq(settings: Settings, max_bytes: int) -> None:
    """The DLQ topic's max.message.bytes lowered, and the broker seen to apply it: a probe
    of the same size as the minimal dead letter is refused."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, settings.dlq_topic,
            {"max.message.bytes": str(max_bytes)})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**client_kwargs(settings))
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


async def _configs(settings: Settings, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configuration as the broker reports it."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    return {resource[3]: {entry[0]: entry[1] for entry in resource[4]}
            for response in responses for resource in response.resources}


def _fresh(settings: Settings, **overrides: Any) -> Settings:
    return settings.with_overrides(topic_prefix=f"t{uuid.uuid4().hex[:10]}", **overrides)


def test_the_broker_holds_every_topic_config_as_specified(kafka_settings: Settings) -> None:
    settings = _fresh(kafka_settings, max_record_bytes=300_000, dlq_retention_bytes=5 << 20)
    result = ioacct(settings, "topics")
    assert result.returncode == 0, result.stderr
    specs = topic_specs(settings)
    held = asyncio.run(_configs(settings, [spec.name for spec in specs]))
    for spec in specs:
        assert {k: held[spec.name][k] for k in spec.config} == spec.config, spec.name
    assert held[settings.raw_topic]["max.message.bytes"] == "300000"
    assert held[settings.dlq_topic]["retention.bytes"] == str(5 << 20)


def test_more_replicas_than_brokers_is_a_clear_error(kafka_settings: Settings) -> None:
    settings = _fresh(kafka_settings, replication_factor=3, min_insync_replicas=2,
                      kafka_wait_s=5)
    wanted = (f"IOACCT_REPLICATION_FACTOR is 3 but the cluster at "
              f"{settings.bootstrap_servers} has 1 broker(s)")
    for verb in ("topics", "worker"):
        result = ioacct(settings, verb)
        assert result.returncode == 1, (verb, result.stdout, result.stderr)
        assert wanted in result.stderr, (verb, result.stderr)
        assert "Traceback" not in result.stderr
    created = [t for t in asyncio.run(_topic_names(settings))
               if t.startswith(settings.topic_prefix)]
    assert created == [], "nothing may be created"


async def _topic_names(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_a_token_revocation_survives_compaction(kafka_settings: Settings) -> None:
    """The token store as specified, its segments only made short so that the log cleaner
    runs within the test: once compaction has dropped the token's creation, its
    revocation is still there (a record, not a tombstone) and a fresh reader sees the
    token revoked."""
    settings = _fresh(kafka_settings)
    spec = next(s for s in topic_specs(settings) if s.name == settings.tokens_topic)
    asyncio.run(_create_topic(settings, replace(spec, config={
        **spec.config, "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"})))
    text, _ = asyncio.run(tokens.create(settings, TENANT_ROLE, "tenant-c"))
    revoked = asyncio.run(tokens.revoke(settings, text))

    def compacted() -> list[Any] | None:
        asyncio.run(tokens.create(settings, TENANT_ROLE, "tenant-fill"))  # rolls the segment
        messages = asyncio.run(read_topic(settings, settings.tokens_topic))
        return messages if messages[0].offset > 0 else None  # the creation is gone

    messages = wait_until(compacted, 180, "the log cleaner to compact the token store")
    mine = [m for m in messages if m.key == revoked.token_id.encode()]
    assert len(mine) == 1 and mine[0].offset == 1 and mine[0].value is not None
    assert all(m.value is not None for m in messages), "nothing writes a tombstone"
    book = asyncio.run(tokens.read_book(settings))
    record = book.get(revoked.token_id)
    assert record is not None and record.revoked_ns == revoked.revoked_ns


async def _create_topic(settings: Settings, spec: TopicSpec) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(spec.name, spec.partitions,
                                            spec.replication_factor,
                                            topic_configs=spec.config)])
    finally:
        await admin.close()
