"""The pipeline's Kafka topics, created idempotently with the admin client.

Faust declares its own internal topics (changelogs, the assignor's leader
topic); the topics here are the pipeline's public interface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.config import Settings
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.kafka.retry import retrying
from streams.kafka.security import client_kwargs

log = logging.getLogger(__name__)

# The worker's Faust tables. Their changelog topics are created here, before the worker
# starts, with the raw topic's partition count: a worker that declared one itself could
# see it missing from its metadata at its first write and crash its agent
# (faust PartitionsMismatch "... changelog topic ... has 0 partitions").
TABLES = ("counters", "windows")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every public topic of one pipeline, with its partitions and configuration."""
    return [
        # Keyed by volume_id: the accounting agent and its table are co-partitioned with it.
        # LogAppendTime: the broker stamps every record, data and Ticks alike, with its own
        # clock; that stamp is the windows' wall clock (idle advance), so processing is a
        # function of the partition's records alone and repeats exactly after a crash.
        TopicSpec(settings.raw_topic, settings.partitions,
                  {"retention.ms": str(settings.raw_retention_ms),
                   "message.timestamp.type": "LogAppendTime"}),
        TopicSpec(settings.dlq_topic, 1, {"retention.ms": str(settings.raw_retention_ms)}),
    ] + [
        # Key = volume_id/window_start_ns, compacted: the latest revision of a window wins.
        # Partition = the volume's raw-topic partition, so consumers stay co-partitioned.
        TopicSpec(settings.stats_topic(length_ns), settings.partitions,
                  {"cleanup.policy": "compact"})
        for length_ns in WINDOW_LENGTHS_NS
    ] + [
        # Key = record_id (tenant/volume/hour/sequence), unique: compaction keeps every
        # record and drops only a re-emitted copy. Partition = the volume's raw partition.
        TopicSpec(settings.billing_topic, settings.partitions, {"cleanup.policy": "compact"}),
        # Key = volume_id/timestamp_ns, compacted like the stats topics: latest revision wins.
        TopicSpec(settings.monitoring_topic, settings.partitions, {"cleanup.policy": "compact"}),
        # Key = token_id, compacted: a token's latest record (created or revoked) wins.
        # One partition: every worker reads all of it (streams/tokens.py).
        TopicSpec(settings.tokens_topic, 1, {"cleanup.policy": "compact"}),
    ] + [
        TopicSpec(f"{settings.app_id}-{table}-changelog", settings.partitions,
                  {"cleanup.policy": "compact"})
        for table in TABLES
    ]


async def ensure_topics(settings: Settings, wait_s: float = 0.0) -> list[str]:
    """Create the topics that are missing; returns the names created. Kafka unreachable
    (or not ready) is retried for ``wait_s`` (a worker starting beside a broker that is
    restarting: ``settings.kafka_wait_s``)."""
    return await retrying(lambda: _ensure_topics(settings),
                          f"creating the topics on Kafka at {settings.bootstrap_servers}",
                          wait_s, log)


async def _ensure_topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics([
                    NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.config)
                    for spec in missing
                ])
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """All partitions of ``topic``; empty when it does not exist.

    An unassigned consumer's own metadata does not cover the topic yet, and
    consumer.topics() returns only names, so read a fresh cluster view (aiokafka
    is pinned in pyproject.toml; this client call is stable across its 0.1x releases).
    """
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
