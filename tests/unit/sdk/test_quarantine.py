"""Which send errors make the spool quarantine an entry, and the quarantine file; the
spool's figures for quarantined records and corrupt bytes. The drain quarantining a
record on a real broker: tests/integration/test_spool_quarantine.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiokafka import errors

from streams.config import Settings
from streams.sdk.drain_log import SpoolStats
from streams.sdk.frames import encode_frame
from streams.sdk.producer import IoProducer
from streams.sdk.quarantine import FILE_NAME, Quarantine, refused_for_good
from streams.sdk.spool import SUFFIX, Spool
from tests.conftest import free_port

TOPIC = "ioacct.io.raw"


@pytest.mark.parametrize(("error", "for_good"), [
    (errors.MessageSizeTooLargeError, True),  # over the topic's max.message.bytes
    (errors.RecordTooLargeError, True),
    (errors.RecordListTooLargeError, True),
    (errors.CorruptRecordException, True),
    (errors.InvalidTopicError, True),
    (errors.TopicAuthorizationFailedError, False),  # an ACL to grant: the records wait
    (errors.UnknownError, True),  # what aiokafka makes of INVALID_RECORD (87)
    (errors.KafkaConnectionError, False),  # the broker is away
    (errors.KafkaTimeoutError, False),
    (errors.RequestTimedOutError, False),
    (errors.NotLeaderForPartitionError, False),
    (errors.UnknownTopicOrPartitionError, False),  # not created yet: `ioacct topics` comes
    (errors.NotEnoughReplicasError, False),
    (errors.OutOfOrderSequenceNumber, False),  # the session's, not the entry's: a new one
    (errors.ProducerFenced, False),
    (errors.UnknownProducerId, False),
    (errors.ClusterAuthorizationFailedError, False),  # idempotent writes not allowed: config
    (errors.KafkaError, False),
])
def test_only_refusals_of_the_record_itself_are_for_good(
    error: type[errors.KafkaError], for_good: bool,
) -> None:
    assert refused_for_good(error()) is for_good
    assert not refused_for_good(OSError("connection reset"))
    assert not refused_for_good(TimeoutError())


def test_every_retriable_aiokafka_error_is_transient() -> None:
    """Whatever aiokafka would retry itself is never quarantined for."""
    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    retriable = [c for c in subclasses(errors.KafkaError) if c.retriable]
    assert len(retriable) > 10
    assert not [c for c in retriable if refused_for_good(c.__new__(c))]


def test_the_quarantine_file_keeps_each_entry_and_logs_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(TOPIC, b"vol-7", b"x" * 5000)
    spool.append("ioacct.io.dlq", None, b"dead letter")
    first, second = spool.read(10)
    quarantine = Quarantine(tmp_path)
    assert quarantine.entries() == []
    with caplog.at_level(logging.ERROR, logger="streams.sdk.producer"):
        quarantine.add(first, errors.MessageSizeTooLargeError())
        quarantine.add(second, errors.TopicAuthorizationFailedError("ioacct.io.dlq"))
    assert quarantine.entries() == [(TOPIC, b"vol-7", b"x" * 5000),
                                    ("ioacct.io.dlq", None, b"dead letter")]
    assert (tmp_path / FILE_NAME).read_bytes() == (
        encode_frame(TOPIC, b"vol-7", b"x" * 5000)
        + encode_frame("ioacct.io.dlq", None, b"dead letter"))  # the spool's frames
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and quarantine.added == 2
    assert f"topic {TOPIC}, key vol-7, 5000 bytes" in lines[0]
    assert "MessageSizeTooLargeError" in lines[0] and "QUARANTINE" in lines[0]
    assert "key none" in lines[1] and "TopicAuthorizationFailedError" in lines[1]
    spool.close()


def test_the_summary_tells_of_quarantined_records_and_corrupt_bytes(tmp_path: Path) -> None:
    payloads = [b"%02d" % n * 30 for n in range(10)]
    spool = Spool(tmp_path / "spool", 1 << 20)
    for value in payloads:
        spool.append(TOPIC, b"vol-1", value)
    spool.close()
    segment = next((tmp_path / "spool").glob("*" + SUFFIX))
    data = bytearray(segment.read_bytes())
    frame_bytes = len(encode_frame(TOPIC, b"vol-1", payloads[0]))
    data[frame_bytes + 1:frame_bytes + 30] = bytes(29)  # the second entry's header
    segment.write_bytes(bytes(data))
    port = free_port()  # nothing listens: the spool is opened, nothing is sent
    settings = Settings(kafka_port=port, bootstrap=f"127.0.0.1:{port}", state_dir=tmp_path,
                        spool_close_wait_s=0.2, kafka_security="PLAINTEXT")  # no login

    async def run() -> SpoolStats | None:
        producer = IoProducer(settings, spool_dir=tmp_path / "spool")
        await producer.start()
        await producer.close()
        return producer.spool_stats

    stats = asyncio.run(run())
    assert stats is not None and stats.corrupt_bytes_dropped == frame_bytes
    assert (stats.records_recovered, stats.records_quarantined) == (9, 0)
    assert any(line.startswith(f"  CORRUPT: {frame_bytes} byte(s)") for line in stats.lines())
    assert not any("QUARANTINED" in line for line in stats.lines())
    shown = SpoolStats(**{**stats.__dict__, "records_quarantined": 2})
    assert any("QUARANTINED: 2 record(s)" in line for line in shown.lines())
