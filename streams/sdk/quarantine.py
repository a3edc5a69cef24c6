"""Entries Kafka refuses for good (too large, invalid, not authorised): which send
errors those are, and the quarantine file beside the spool that keeps them, so that
one bad entry never blocks the spool behind it (docs/producer.md, "Quarantine").

``<spool dir>/QUARANTINE`` holds the refused entries as spool frames (frames.py),
appended and fsync'd before the entry leaves the spool.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownError,
)

from streams.sdk.frames import FRAME, decode_payload, encode_frame, walk
from streams.sdk.kafka_client import acknowledged, describe
from streams.sdk.spool import SpoolEntry

log = logging.getLogger("streams.sdk.producer")
FILE_NAME = "QUARANTINE"

# Refusals of the record itself: sending it again can only fail again. Every other
# error, retriable or not, is the session's or the cluster's (a connection, a timeout,
# a fenced or out-of-sequence session, an ACL the operator has yet to grant, a topic not
# created yet): a new session or an operator fixes it, and quarantining for it would empty the
# spool. UnknownError is what aiokafka 0.14 makes of INVALID_RECORD (code 87), which it
# does not know. Like every refusal, it quarantines only an entry sent alone (send_alone).
REFUSED_FOR_GOOD: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,  # larger than the topic's max.message.bytes, or the client's
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
    UnknownError,
)


def refused_for_good(exc: BaseException) -> bool:
    """Kafka refused the record itself: resending it can never succeed."""
    return isinstance(exc, REFUSED_FOR_GOOD)


async def send_alone(kafka: AIOKafkaProducer, entry: SpoolEntry) -> KafkaError | None:
    """Send one entry and wait for Kafka's answer: None once acknowledged, Kafka's
    refusal when it refused this entry for good; any other error is raised. Alone, the
    entry is a batch of its own, so a refusal is this entry's and no other's."""
    try:
        await acknowledged(await kafka.send(entry.topic, value=entry.value, key=entry.key))
    except KafkaError as exc:
        if refused_for_good(exc):
            return exc
        raise
    return None


class Quarantine:
    """The append-only file of entries Kafka refused for good."""

    def __init__(self, spool_directory: Path) -> None:
        self.path = Path(spool_directory) / FILE_NAME
        self.added = 0  # this run

    def add(self, entry: SpoolEntry, exc: BaseException) -> None:
        """Append and fsync the entry, then log it once: topic, key, size, the error."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            frame = memoryview(encode_frame(entry.topic, entry.key, entry.value))
            while frame:
                frame = frame[os.write(fd, frame):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.added += 1
        key = "none" if entry.key is None else entry.key.decode(errors="replace")
        log.error("Kafka refused a record for good (%s): topic %s, key %s, %d bytes; moved "
                  "to %s, the spool goes on with the next record", describe(exc), entry.topic,
                  key, len(entry.value), self.path)

    def entries(self) -> list[tuple[str, bytes | None, bytes]]:
        """What the file holds (topic, key, value), in the order it was added."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [decode_payload(data[item[0] + FRAME.size:sum(item)])
                for item in walk(data, 0) if isinstance(item, tuple)]
