"""topic_specs: durability (replication, min.insync.replicas), size limits checked against
what is really written (the SDK's producer, a dead letter of the largest raw record, a
journal chunk), the dead-letter topic's byte bound and the token store's compaction."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.ingest import Rejection, dead_letter_record
from streams.kafka.topics import (
    CHANGELOG_MAX_MESSAGE_BYTES,
    TABLES,
    TopicsError,
    check_durability,
    compression_type,
    topic_specs,
    worker_max_request_bytes,
)
from streams.sdk.producer import IoProducer
from streams.state.journal import JOURNAL_CHUNK_BYTES, JournaledTable

SIZES = [4096, 65536, 1 << 20, 5 << 20]


def _by_name(settings: Settings) -> dict[str, dict[str, str]]:
    return {spec.name: spec.config for spec in topic_specs(settings)}


def _batch_bytes(key: bytes | None, value: bytes) -> int:
    """What the broker compares with max.message.bytes: one record's whole batch."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])


@pytest.mark.parametrize(("replicas", "in_sync"), [(1, 1), (3, 2), (5, 3)])
def test_every_topic_is_replicated_as_set(replicas: int, in_sync: int) -> None:
    settings = Settings(replication_factor=replicas, min_insync_replicas=in_sync)
    specs = topic_specs(settings)
    names = {spec.name for spec in specs}
    assert {settings.raw_topic, settings.dlq_topic, settings.tokens_topic} <= names
    assert {f"{settings.app_id}-{table}-changelog" for table in TABLES} <= names
    assert len(names) == len(specs)
    for spec in specs:
        assert spec.replication_factor == replicas, spec
        assert spec.config["min.insync.replicas"] == str(in_sync), spec


def test_defaults_fit_one_local_broker() -> None:
    assert Settings().replication_factor == 1 and Settings().min_insync_replicas == 1


@pytest.mark.parametrize(("replicas", "in_sync"), [(1, 2), (3, 4), (3, 0), (0, 0)])
def test_settings_no_write_could_meet_are_refused(replicas: int, in_sync: int) -> None:
    with pytest.raises(TopicsError, match="IOACCT_MIN_INSYNC_REPLICAS"):
        check_durability(Settings(replication_factor=replicas, min_insync_replicas=in_sync))


def test_settings_a_cluster_can_meet_pass() -> None:
    check_durability(Settings(replication_factor=3, min_insync_replicas=2))
    check_durability(Settings(replication_factor=3, min_insync_replicas=3))


@pytest.mark.parametrize("max_record_bytes", SIZES)
def test_the_sdk_sends_nothing_the_raw_topic_refuses(max_record_bytes: int) -> None:
    # No broker: the client is built, never started, so there is no login to read.
    settings = Settings(max_record_bytes=max_record_bytes, kafka_security="PLAINTEXT")
    raw_limit = int(_by_name(settings)[settings.raw_topic]["max.message.bytes"])
    assert raw_limit == max_record_bytes

    async def limits() -> tuple[int, int]:
        producer = IoProducer(settings, spool_dir=False)
        kafka = producer._kafka  # noqa: SLF001 -- the client _new_kafka built
        try:
            return kafka._max_request_size, kafka._message_accumulator._batch_size  # noqa: SLF001
        finally:
            await kafka.stop()

    request, batch = asyncio.run(limits())
    assert request <= raw_limit and batch <= raw_limit


@pytest.mark.parametrize("max_record_bytes", SIZES)
def test_a_dead_letter_of_the_largest_raw_record_fits_the_dlq(max_record_bytes: int) -> None:
    """The worst dead letter today: the whole record (as large as the raw topic takes),
    with a long reason, keyed by a long volume id."""
    settings = Settings(max_record_bytes=max_record_bytes)
    config = _by_name(settings)[settings.dlq_topic]
    payload = b"\xff" * max_record_bytes
    record = dead_letter_record(Rejection("x" * 2000, 0, payload=payload),
                                settings.raw_topic, 7, 2**62, 2**62)
    value = default_schemas().encode("DeadLetter", record)
    key = b"v" * 1000
    assert _batch_bytes(key, value) <= int(config["max.message.bytes"])
    assert _batch_bytes(key, value) <= worker_max_request_bytes(settings)


def test_the_dlq_is_bounded_by_bytes_and_by_time() -> None:
    settings = Settings(dlq_retention_bytes=123 << 20, raw_retention_ms=86_400_000)
    config = _by_name(settings)[settings.dlq_topic]
    assert config["retention.bytes"] == str(123 << 20)
    assert config["retention.ms"] == "86400000"
    assert config.get("cleanup.policy", "delete") == "delete"
    assert Settings().dlq_retention_bytes == 1 << 30


def test_a_journal_chunk_fits_the_changelog() -> None:
    """A real journal of writes larger than a chunk: every message it writes (chunks and
    entries), with its key, fits the changelog topics and the worker's producer."""
    settings = Settings()
    written: dict[bytes, bytes] = {}
    table = JournaledTable(written, b"p|7|journal")
    for i in range(1200):  # ~1.2 MB of pending writes: several chunks
        table[b"volume-%06d|60000000000|%d" % (i, i)] = bytes([i % 251]) * 1000
    table.commit()
    largest = max(_batch_bytes(key, value) for key, value in written.items())
    chunks = [key for key in written if key.startswith(b"p|7|journal|")]
    assert len(chunks) >= 2  # cut at the chunk size, the first chunk nearly full
    assert largest >= JOURNAL_CHUNK_BYTES - 1100
    configs = _by_name(settings)
    for table_name in TABLES:
        limit = int(configs[f"{settings.app_id}-{table_name}-changelog"]["max.message.bytes"])
        assert largest <= limit
    assert largest <= worker_max_request_bytes(settings)
    assert 2 * JOURNAL_CHUNK_BYTES <= CHANGELOG_MAX_MESSAGE_BYTES  # an entry past a chunk


def test_a_token_revocation_outlives_compaction() -> None:
    """Compaction keeps each token's latest record, the revocation; nothing deletes by
    age or size, so it is never dropped."""
    settings = Settings()
    config = _by_name(settings)[settings.tokens_topic]
    assert config["cleanup.policy"] == "compact"  # not "compact,delete"
    assert config["retention.ms"] == "-1" and config["retention.bytes"] == "-1"
    assert int(config["delete.retention.ms"]) >= 0


def test_the_volume_registry_is_kept_like_the_tokens() -> None:
    """One partition (every worker reads all of it), compacted, never aged out: a
    volume's registration lives as long as the topic."""
    settings = Settings()
    specs = {spec.name: spec for spec in topic_specs(settings)}
    spec = specs[settings.registry_topic]
    assert settings.registry_topic == "ioacct.volumes.registry" and spec.partitions == 1
    assert spec.config["cleanup.policy"] == "compact"
    assert spec.config["retention.ms"] == "-1" and spec.config["retention.bytes"] == "-1"
    assert spec.config["min.insync.replicas"] == str(settings.min_insync_replicas)


def test_the_workers_compression_is_a_kafka_codec_or_a_clear_error() -> None:
    assert compression_type(Settings()) == "zstd"
    assert compression_type(Settings(kafka_compression="LZ4")) == "lz4"
    assert compression_type(Settings(kafka_compression="none")) is None
    with pytest.raises(ValueError, match="IOACCT_KAFKA_COMPRESSION='brotli': use one of"):
        compression_type(Settings(kafka_compression="brotli"))
