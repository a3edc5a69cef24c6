"""The pipeline's Kafka topics, created idempotently with the admin client.

Faust declares its own internal topics (changelogs, the assignor's leader
topic); the topics here are the pipeline's public interface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

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


# A changelog record is at most one journal chunk (state/journal.py JOURNAL_CHUNK_BYTES,
# 512 KiB, not imported: state is kafka's sibling) plus its key, or one table entry larger
# than a chunk that the journal could not split: room for twice a chunk
# (tests/unit/kafka/test_topics.py writes a real journal against it).
CHANGELOG_MAX_MESSAGE_BYTES = 1 << 20

# The token store: compaction only, never deletion by age or size, so a token's latest
# record, its revocation included, is kept as long as the topic lives (a tombstone written
# by hand, which nothing of ours writes, stays a day, Kafka's default, then its key goes).
TOKENS_CONFIG = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1",
                 "delete.retention.ms": str(24 * 3600 * 1000)}


class TopicsError(RuntimeError):
    """The topics cannot be created as the settings ask; the message says why."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    replication_factor: int = 1


def dlq_max_message_bytes(settings: Settings) -> int:
    """The dead-letter topic's max.message.bytes. A dead letter is made from one input
    record (at most ``max_record_bytes``): its payload or a part of it, and the reasons;
    twice the record leaves room for those. Anything larger is sent minimal instead
    (pipeline/publish.py), so no input record can make an unpublishable dead letter."""
    return 2 * settings.max_record_bytes


def worker_max_request_bytes(settings: Settings) -> int:
    """The worker's producer limit (faust's producer_max_request_size): the largest record
    it writes is a dead letter or a changelog record."""
    return max(dlq_max_message_bytes(settings), CHANGELOG_MAX_MESSAGE_BYTES)


COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


def compression_type(settings: Settings) -> str | None:
    """The worker producer's compression.type (faust's producer_compression_type; None:
    uncompressed), checked: aiokafka only says so when it first sends."""
    name = settings.kafka_compression.lower()
    if name not in COMPRESSIONS:
        raise ValueError(f"IOACCT_KAFKA_COMPRESSION={settings.kafka_compression!r}: use one "
                         f"of {', '.join(COMPRESSIONS)}")
    return None if name == "none" else name


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every public topic of one pipeline, with its partitions and configuration, each
    replicated ``replication_factor`` times with ``min_insync_replicas``."""
    return [TopicSpec(spec.name, spec.partitions,
                      {**spec.config, "min.insync.replicas": str(settings.min_insync_replicas)},
                      settings.replication_factor)
            for spec in _specs(settings)]


def _specs(settings: Settings) -> list[TopicSpec]:
    return [
        # Keyed by volume_id: the accounting agent and its table are co-partitioned with it.
        # LogAppendTime: the broker stamps every record, data and Ticks alike, with its own
        # clock; that stamp is the windows' wall clock (idle advance), so processing is a
        # function of the partition's records alone and repeats exactly after a crash.
        # max.message.bytes: the largest record batch a producer may write (the SDK's
        # max_request_size is the same setting), so every dead letter of one fits the DLQ.
        TopicSpec(settings.raw_topic, settings.partitions,
                  {"retention.ms": str(settings.raw_retention_ms),
                   "message.timestamp.type": "LogAppendTime",
                   "max.message.bytes": str(settings.max_record_bytes)}),
        # Bounded by bytes too: a flood of bad input cannot fill the broker's disk (the
        # originals stay in the raw topic, where an audit finds them).
        TopicSpec(settings.dlq_topic, 1,
                  {"retention.ms": str(settings.raw_retention_ms),
                   "retention.bytes": str(settings.dlq_retention_bytes),
                   "max.message.bytes": str(dlq_max_message_bytes(settings))}),
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
        # Key = token_id, compacted: a token's latest record (created or revoked) wins; a
        # revocation is a record, never a tombstone (api/tokens.py), so compaction keeps it.
        # One partition: every worker reads all of it (api/tokens.py).
        TopicSpec(settings.tokens_topic, 1, TOKENS_CONFIG),
        # Key = volume_id, compacted and never aged out like the tokens: a volume's latest
        # registration is its owner for as long as the topic lives. One partition: every
        # worker reads all of it (pipeline/registry_feed.py).
        TopicSpec(settings.registry_topic, 1, TOKENS_CONFIG),
    ] + [
        TopicSpec(f"{settings.app_id}-{table}-changelog", settings.partitions,
                  {"cleanup.policy": "compact",
                   "max.message.bytes": str(CHANGELOG_MAX_MESSAGE_BYTES)})
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
    check_durability(settings)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            brokers = len((await admin.describe_cluster())["brokers"])
            if brokers < settings.replication_factor:
                raise TopicsError(
                    f"IOACCT_REPLICATION_FACTOR is {settings.replication_factor} but the "
                    f"cluster at {settings.bootstrap_servers} has {brokers} broker(s): set "
                    f"it (and IOACCT_MIN_INSYNC_REPLICAS) to at most {brokers}")
            response = await admin.create_topics([
                NewTopic(spec.name, spec.partitions, spec.replication_factor,
                         topic_configs=spec.config)
                for spec in missing
            ])
            _raise_refused(response.topic_errors)
        return [spec.name for spec in missing]
    finally:
        await admin.close()


def check_durability(settings: Settings) -> None:
    """Settings no topic can have: a clear error before anything is created."""
    if settings.replication_factor < 1 or not (
            1 <= settings.min_insync_replicas <= settings.replication_factor):
        raise TopicsError(
            f"IOACCT_MIN_INSYNC_REPLICAS ({settings.min_insync_replicas}) must be between 1 "
            f"and IOACCT_REPLICATION_FACTOR ({settings.replication_factor}): no write could "
            "be acknowledged otherwise")


def _raise_refused(topic_errors: list[tuple[Any, ...]]) -> None:
    """aiokafka returns the broker's per-topic answers without raising: a topic refused
    (bad config, too few brokers) must not pass for created. One that exists already
    (another process created it between list and create) is fine."""
    refused = [f"{name}: {rest[0] if rest and rest[0] else for_code(code).__name__}"
               for name, code, *rest in topic_errors
               if code not in (0, TopicAlreadyExistsError.errno)]
    if refused:
        raise TopicsError("the broker refused to create " + "; ".join(refused))


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """All partitions of ``topic``; empty when it does not exist.

    An unassigned consumer's own metadata does not cover the topic yet, and
    consumer.topics() returns only names, so read a fresh cluster view (aiokafka
    is pinned in pyproject.toml; this client call is stable across its 0.1x releases).
    """
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
