"""A record Kafka refuses for good does not block the spool behind it.

A producer's spool holds, in order, good records, one record larger than the raw
topic accepts (the topic is created with a small ``max.message.bytes``) and more good
records; `ioacct produce` started on that spool sends every good record (read back from
the topic), moves the big one to ``<spool>/QUARANTINE`` and says so in its summary.
Before, the big record was retried forever at the head of the spool and nothing behind
it was sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.events import IoEvent
from streams.kafka.security import client_kwargs
from streams.sdk.frames import encode_frame
from streams.sdk.producer import IoProducer
from streams.sdk.quarantine import FILE_NAME, Quarantine
from streams.sdk.spool import Spool
from tests.conftest import free_port

from .harness import ioacct, read_topic

pytestmark = pytest.mark.integration

SCHEMAS = default_schemas()
TOPIC_MAX_BYTES = 16_384  # the raw topic's max.message.bytes in this test
BIG_EVENTS = 1_500  # one record of these many events: about 40 KB
T0 = 1_700_000_000 * 10**9


def test_a_record_kafka_refuses_for_good_is_quarantined_and_the_rest_is_sent(
    pipeline_settings: Settings, tmp_path: Path,
) -> None:
    settings = pipeline_settings.with_overrides(spool_close_wait_s=5)
    asyncio.run(_create_raw_topic(settings))
    spool_dir = tmp_path / "spool"
    asyncio.run(_spool_while_kafka_is_away(settings, spool_dir))
    spooled = _spool_contents(spool_dir)  # what the second producer finds, in order
    big = [v for _, _, v in spooled if len(encode_frame(settings.raw_topic, b"", v))
           > TOPIC_MAX_BYTES]
    assert len(big) == 1 and spooled[len(spooled) // 2][2] == big[0]  # good, big, good

    after = [IoEvent(f"vol-{k % 4}", "tenant-1", "read", "ok", 512 * k, 512, T0 + k,
                     T0 + k + 700) for k in range(300)]
    jsonl = tmp_path / "after.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(e.to_json()) + b"\n" for e in after))
    run = ioacct(settings, "produce", "--jsonl", str(jsonl), "--spool-dir", str(spool_dir))
    print(f"\n{run.stdout}\n{run.stderr[-3000:]}")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "0 record(s) (0 bytes) left" in run.stdout
    assert f"{len(spooled)} recovered from an earlier run" in run.stdout
    assert "QUARANTINED: 1 record(s) Kafka refused for good" in run.stdout
    assert "MessageSizeTooLargeError" in run.stderr  # its log line: topic, key, size, error
    assert f"topic {settings.raw_topic}, key vol-big, {len(big[0])} bytes" in run.stderr

    landed = [m.value for m in asyncio.run(read_topic(settings, settings.raw_topic, 1.0))]
    good = [v for _, _, v in spooled if v != big[0]]
    assert sorted(set(landed) & set(good)) == sorted(good)  # every good record arrived
    assert big[0] not in landed
    ours = [SCHEMAS.decode(v)[1] for v in landed if v not in good]
    assert sum(len(r["op"]) for r in ours) == len(after)  # and the second run's own
    quarantined = Quarantine(spool_dir).entries()
    assert quarantined == [(settings.raw_topic, b"vol-big", big[0])]
    assert (spool_dir / FILE_NAME).exists()


async def _create_raw_topic(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.raw_topic, 4, 1, topic_configs={
            "max.message.bytes": str(TOPIC_MAX_BYTES)})])
    finally:
        await admin.close()


async def _spool_while_kafka_is_away(settings: Settings, spool_dir: Path) -> None:
    """Good records, the big one, good records: spooled by a producer whose Kafka is not
    there, and left in its spool when it closes."""
    port = free_port()
    away = settings.with_overrides(kafka_port=port, bootstrap=f"127.0.0.1:{port}",
                                   kafka_password_file=str(settings.kafka_password_path()),
                                   kafka_ca_file=str(settings.kafka_ca_path()),
                                   spool_close_wait_s=0.3, batch_max_events=BIG_EVENTS,
                                   batch_max_age_ms=600_000)
    producer = IoProducer(away, spool_dir=spool_dir)
    await producer.start()
    for part in ("before", "big", "after"):
        volumes = ["vol-big"] if part == "big" else [f"vol-{part}-{n}" for n in range(6)]
        count = BIG_EVENTS if part == "big" else 60
        for k in range(count):
            producer.record(volumes[k % len(volumes)], "tenant-1", "write", "ok", 4096 * k,
                            4096, T0 + k, T0 + k + 900)
        await producer.flush(wait_s=0.1)  # each volume's batch goes to the spool now
    assert await producer.close() == 13  # 6 + 1 + 6 records, none sent


def _spool_contents(directory: Path) -> list[tuple[str, bytes | None, bytes]]:
    spool = Spool(directory, 1 << 30)
    try:
        return [(e.topic, e.key, e.value) for e in spool.read(10_000)]
    finally:
        spool.close()
