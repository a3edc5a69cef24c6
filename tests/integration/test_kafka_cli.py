"""`ioacct kafka` and `ioacct topics` against the real broker the session started."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.config import Settings
from streams.kafka.topics import ensure_topics
from tests.conftest import free_port

from .harness import ioacct

pytestmark = pytest.mark.integration


def test_status_of_the_running_broker(kafka_settings: Settings) -> None:
    result = ioacct(kafka_settings, "kafka", "status")
    assert result.returncode == 0
    assert f"kafka on 127.0.0.1:{kafka_settings.kafka_port}: running (pid" in result.stdout


def test_start_is_idempotent(kafka_settings: Settings) -> None:
    result = ioacct(kafka_settings, "kafka", "start")
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stdout


def test_start_refuses_a_port_another_broker_holds(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Another state directory, the session broker's port: it must not report "started"
    while the other broker answers (and would take this pipeline's records)."""
    other_dir = tmp_path_factory.mktemp("other-state")
    result = ioacct(kafka_settings, "kafka", "start", "--state-dir", str(other_dir))
    assert result.returncode == 1, result.stdout
    assert f"127.0.0.1:{kafka_settings.kafka_port} is already in use" in result.stderr
    assert "started" not in result.stdout


def test_status_and_stop_of_a_broker_that_is_not_there(kafka_settings: Settings) -> None:
    port = str(free_port())
    status = ioacct(kafka_settings, "kafka", "status", "--kafka-port", port)
    assert status.returncode == 3 and "not running" in status.stdout
    stop = ioacct(kafka_settings, "kafka", "stop", "--kafka-port", port)
    assert stop.returncode == 0 and "was not running" in stop.stdout


def test_topics_are_created_once(pipeline_settings: Settings) -> None:
    first = ioacct(pipeline_settings, "topics")
    assert first.returncode == 0, first.stderr
    assert pipeline_settings.raw_topic in first.stdout
    assert pipeline_settings.dlq_topic in first.stdout
    again = ioacct(pipeline_settings, "topics")
    assert "nothing (all topics exist)" in again.stdout


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def test_topic_creation_waits_for_a_broker_that_answers_late(
        pipeline_settings: Settings) -> None:
    """What a worker does first (streams/worker.py): create the topics, riding out Kafka
    unreachable for up to kafka_wait_s. The bootstrap address refuses connections for 3 s,
    then forwards to the session broker (after the bootstrap, clients go to the address
    the broker advertises)."""
    port = free_port()
    settings = pipeline_settings.with_overrides(bootstrap=f"127.0.0.1:{port}",
                                                topic_prefix=f"late{port}")

    async def scenario() -> tuple[list[str], float]:
        async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", pipeline_settings.kafka_port)
            await asyncio.gather(_forward(reader, up_writer), _forward(up_reader, writer))

        started = time.monotonic()
        creating = asyncio.create_task(ensure_topics(settings, wait_s=60))
        await asyncio.sleep(3)
        assert not creating.done(), "it returned while nothing listened"
        server = await asyncio.start_server(proxy, "127.0.0.1", port)
        try:
            created = await asyncio.wait_for(creating, 60)
        finally:
            server.close()
        return created, time.monotonic() - started

    created, took = asyncio.run(scenario())
    assert settings.raw_topic in created and took >= 3
    # And with no wait, the same unreachable address fails at once, as `ioacct topics` does.
    with pytest.raises(KafkaConnectionError):
        asyncio.run(ensure_topics(settings.with_overrides(bootstrap=f"127.0.0.1:{free_port()}")))
