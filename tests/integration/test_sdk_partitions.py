"""The producer SDK against the real broker: raw layout 2, one record per partition.

A simulated fleet goes through ``IoProducer`` (with its spool, and sending directly) to
a raw topic whose partition count differs from the settings' (the SDK must take it from
the topic's metadata). A plain consumer reads the topic back: every record is an
``IoBatch2`` in the partition Kafka's default partitioner gives each of its volumes,
keyed by its first volume; every event arrived once, each volume's in its order; seqs
strictly increase in send order. An event no record can carry is dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.events import OPS, STATUSES, IoEvent
from streams.core.partitioning import default_partition
from streams.core.raw import raw_batch
from streams.core.times import NS_PER_S
from streams.kafka.topics import ensure_topics
from streams.sdk.producer import IoProducer
from streams.sources.simulator import FleetConfig, FleetSimulator

from .harness import read_topic

pytestmark = pytest.mark.integration

SCHEMAS = default_schemas()
TOPIC_PARTITIONS = 5  # not the settings' 8: the SDK must read the topic's own count
EVENTS, VOLUMES, RATE = 20_000, 300, 20_000.0


def fleet(seed: int) -> list[IoEvent]:
    start_ns = time.time_ns() - int(EVENTS / RATE * NS_PER_S) - 5 * NS_PER_S
    config = FleetConfig(seed=seed, volumes=VOLUMES, tenants=12, hosts=2,
                         start_ns=start_ns, events_per_s=RATE)
    return list(FleetSimulator(config).events(EVENTS))


async def produce(settings: Settings, events: list[IoEvent], spool: Path | bool) -> IoProducer:
    producer = IoProducer(settings, spool_dir=spool if isinstance(spool, Path) else False)
    await producer.start()
    for n, event in enumerate(events, 1):
        producer.record_event(event)
        if n % 500 == 0:
            await asyncio.sleep(0.01)  # a live source: the ticker flushes by age
    producer.record("vol-bad", "tenant-1", "read", "ok", 2.5, 4096, 1, 2)  # type: ignore[arg-type]
    assert await producer.close() == 0
    return producer


def decoded_events(message: Any) -> tuple[Any, list[IoEvent]]:
    name, record = SCHEMAS.decode(message.value)
    assert name == "IoBatch2"
    batch = raw_batch(name, record)
    cols = batch.columns
    return batch, [
        IoEvent(cols.volumes[v], cols.tenants[v], OPS[op], STATUSES[status], offset, nbytes,
                submit, complete, batch.host_id)
        for v, op, status, offset, nbytes, submit, complete in zip(
            cols.volume.tolist(), cols.op.tolist(), cols.status.tolist(),
            batch.offset.tolist(), cols.nbytes.tolist(), cols.submit_ns.tolist(),
            cols.complete_ns.tolist(), strict=True)]


@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "direct"])
def test_every_event_arrives_once_in_its_volumes_partition(
    pipeline_settings: Settings, tmp_path: Path, spooled: bool,
) -> None:
    settings = pipeline_settings.with_overrides(
        topic_prefix=f"{pipeline_settings.topic_prefix}{'s' if spooled else 'd'}")
    asyncio.run(ensure_topics(settings.with_overrides(partitions=TOPIC_PARTITIONS)))
    events = fleet(seed=3 if spooled else 4)
    producer = asyncio.run(produce(settings, events, tmp_path / "spool" if spooled else False))
    assert producer.batcher.partitions == TOPIC_PARTITIONS
    messages = asyncio.run(read_topic(settings, settings.raw_topic))
    assert len(messages) == producer.records_sent

    got: dict[str, list[IoEvent]] = defaultdict(list)
    seqs: list[int] = []
    last_seq: dict[int, int] = {}
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        batch, record_events = decoded_events(message)
        assert batch.producer_id == producer.producer_id
        volumes = batch.columns.volumes
        assert message.key == volumes[0].encode()
        assert {default_partition(v.encode(), TOPIC_PARTITIONS) for v in volumes} == {
            message.partition}
        assert batch.seq > last_seq.get(message.partition, -1)  # in send order
        last_seq[message.partition] = batch.seq
        seqs.append(batch.seq)
        for event in record_events:
            got[event.volume_id].append(event)
    assert sorted(seqs) == sorted(set(seqs))
    want: dict[str, list[IoEvent]] = defaultdict(list)
    for event in events:
        want[event.volume_id].append(event)
    assert dict(got) == dict(want)  # each event once, each volume's in its order
    assert producer.events_sent == len(events)
    assert max(len(decoded_events(m)[1]) for m in messages) > 100  # records carry many
    assert any(len(decoded_events(m)[0].columns.volumes) > 1 for m in messages)

    dead = [SCHEMAS.decode(m.value)[1] for m in asyncio.run(
        read_topic(settings, settings.dlq_topic))]
    assert [d["reason"] for d in dead] == [
        "offset must be an integer that fits in 64 bits (signed)"]
    assert b"vol-bad" in dead[0]["payload"]
