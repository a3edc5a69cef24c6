"""What the agents send: window records, billing records, watermark markers and dead
letters, each to its topic and partition, and the rate-limited log of rejections."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownError,
    UnsupportedForMessageFormatError,
)
from faust.exceptions import ProducerSendError

from streams.core.dead_letters import dead_letter_key, dead_letter_record
from streams.core.ingest import RecordOutcome
from streams.core.keys import source_offset_header, watermark_key, window_key
from streams.core.step import StepRecord
from streams.core.times import MINUTE_NS, NS_PER_S
from streams.core.windows.book import Emission
from streams.pipeline.outputs import NO_HEADERS, Headers, Message

if TYPE_CHECKING:
    from streams.pipeline.app import Pipeline, WorkerStats

log = logging.getLogger(__name__)


async def publish_windows(p: Pipeline, emissions: list[Emission], partition: int,
                          offset: int) -> None:
    """The accounting stage's window records (1 s, 1 m, 1 h), each to the stats topic of
    its length (1 m ones also as monitoring records), then the billing records the same
    input made, then the watermark markers of ``ioacct.stats.1s`` and ``ioacct.stats.1m``
    for their readers, if any (``offset``: the input record whose processing made them)."""
    windows = p.windows_for(partition)
    now_ns = time.time_ns()
    values = p.window_encoder.encode_emissions(emissions)
    minutes = [e for e in emissions if e.length_ns == MINUTE_NS]
    metrics = iter(p.metrics_encoder.encode_emissions(minutes))
    by_topic: dict[int, list[Message]] = {length_ns: [] for length_ns in p.stats_topics}
    monitoring: list[Message] = []
    delays: list[int] = []
    headers: dict[int, Headers] = {}  # one list per input offset (aiokafka only reads it)
    for e, value in zip(emissions, values, strict=True):
        start_ns, length_ns = e.start_ns, e.length_ns
        if e.revision == 0 and length_ns == NS_PER_S:
            delays.append(now_ns - start_ns - length_ns)
        key = window_key(e.volume_id, start_ns)
        header = headers.get(e.offset)
        if header is None:
            header = headers[e.offset] = source_offset_header(e.offset)
        by_topic[length_ns].append((key, value, header))
        if length_ns == MINUTE_NS:  # its monitoring record (core/monitoring.py), same key
            monitoring.append((key, next(metrics), NO_HEADERS))
    p.stats.close_delays.observe_many(delays)
    for length_ns, messages in by_topic.items():
        await _publish_many(p, p.stats_topics[length_ns], partition, messages)
    await _publish_many(p, p.monitoring_topic, partition, monitoring)
    for b in windows.take_billing():
        await _publish(p, p.billing_topic, partition, b.record_id.encode(),
                       p.schemas.encode("BillingRecord", b.to_dict()))
    for length_ns, marker_ns in ((NS_PER_S, windows.take_marker()),
                                 (MINUTE_NS, windows.take_minute_marker())):
        if marker_ns is not None:
            await _publish(p, p.stats_topics[length_ns], partition, watermark_key(partition),
                           p.schemas.encode("Watermark", {"partition": partition,
                                                          "watermark_ns": marker_ns}),
                           source_offset_header(offset))
    await send_outputs(p)


async def _publish(p: Pipeline, topic: Any, partition: int, key: bytes, value: bytes,
                   headers: Headers | None = None) -> None:
    """One record (:func:`_publish_many`)."""
    await _publish_many(p, topic, partition,
                        [(key, value, NO_HEADERS if headers is None else headers)])


async def send_outputs(p: Pipeline) -> None:
    """Hand the records queued so far to the producer, as record batches."""
    if p.outputs is not None and p.outputs.queued:
        await p.outputs.send()


async def _publish_many(p: Pipeline, topic: Any, partition: int,
                        messages: list[Message]) -> None:
    """Records in order: queued for record batches (outputs.py), or faust's send each."""
    if p.outputs is not None:
        if messages:
            p.outputs.add_many(topic.get_topic_name(), partition, messages)
        return
    for key, value, headers in messages:
        await topic.send(key=key, value=value, partition=partition,
                         headers=list(headers) or None)  # faust may add to its list


async def publish_rejections(
    p: Pipeline, outcome: RecordOutcome | StepRecord, message: Any, now_ns: int,
) -> None:
    """The record's one dead letter, if any (a record never makes more than one), keyed
    by the volume it names."""
    rejection = outcome.rejection
    if rejection is None:
        return
    record = dead_letter_record(rejection, message.topic, message.partition, message.offset,
                                now_ns)
    await publish_dead_letter(p, dead_letter_key(rejection), record)
    log_rejection(p.stats, rejection.events, message, rejection.reason)


async def publish_dead_letter(p: Pipeline, key: bytes | None, record: dict[str, Any]) -> None:
    """Every dead letter goes through here: whole, else (refused for good: too large,
    invalid, unencodable) minimal, else an ERROR line and ``dead_letters_failed``; never
    raises for the record's sake. A transient failure (Kafka away) raises: the agent
    exits without committing and the restarted worker makes the dead letter again."""
    try:
        await _send_dead_letter(p, key, record)
        return
    except Exception as exc:
        if not refused_for_good(exc):
            raise
        whole_error = exc
    try:
        await _send_dead_letter(p, None, minimal_dead_letter(record, whole_error))
    except Exception as exc:
        if not refused_for_good(exc):
            raise
        p.stats.dead_letters_failed += 1
        log.error("dead letter of %s[%d]@%d not published, not even minimal (%s; whole: %s); "
                  "the record stays in its topic: %s", record["source_topic"],
                  record["source_partition"], record["source_offset"], _named(exc),
                  _named(whole_error), record["reason"][:MINIMAL_REASON_CHARS])


async def _send_dead_letter(p: Pipeline, key: bytes | None, record: dict[str, Any]) -> None:
    value = p.schemas.encode("DeadLetter", record)
    delivery = await p.dlq_topic.send(key=key, value=value)
    # faust returns before the broker answers: a record the topic refuses (larger than its
    # max.message.bytes) fails only here, and would otherwise be lost with a warning.
    await delivery


def refused_for_good(exc: BaseException) -> bool:
    """Whether sending the same record again can never succeed: the record itself is
    refused (by the producer, which faust wraps in ProducerSendError, or by the broker),
    or cannot be encoded. Codes aiokafka cannot name (INVALID_RECORD, 87) are
    UnknownError, which it does not retry either."""
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, REFUSED_FOR_GOOD)


# What Kafka says of the record itself; and a local encoding error (fastavro).
REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError,
                    CorruptRecordException, InvalidTimestampError,
                    UnsupportedForMessageFormatError, UnknownError,
                    ValueError, TypeError, OverflowError)
MINIMAL_REASON_CHARS = 1024  # a reason may quote hostile input: keep the minimal one small
SMALL_TEXT_CHARS = 256  # ids and hashes are kept up to this; longer text a record chose is not
TOO_LARGE = "dead letter too large to publish whole"


def minimal_dead_letter(record: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The dead letter without anything that can be large (bytes such as the payload, long
    text such as the event or ids a hostile record chose): numbers, short text, the reason
    and where the original is, which its topic keeps."""
    small = {name: _small(value) for name, value in record.items()}
    reason = f"{TOO_LARGE} ({_named(error)[:300]}): {record['reason']}"
    return {**small, "reason": reason[:MINIMAL_REASON_CHARS],
            "source_topic": record["source_topic"]}


def _small(value: Any) -> Any:
    """A field's value if it cannot be large; else its empty form (lists stay lists, as
    the schema's arrays want)."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= SMALL_TEXT_CHARS:
        return value
    return [] if isinstance(value, list) else None


def _named(exc: BaseException) -> str:
    """The error faust wrapped, if any, by name and text (aiokafka's name themselves)."""
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    name, text = type(exc).__name__, str(exc)
    return text if name in text else f"{name}: {text}"


def log_rejection(stats: WorkerStats, events: int, message: Any, reason: str) -> None:
    # At most one line a second: a flood of bad input must not flood the log too.
    now_ns = time.monotonic_ns()
    if now_ns - stats.last_rejection_log_ns < NS_PER_S:
        stats.rejections_not_logged += 1
        return
    log.warning("rejected %d event(s) at %s[%d]@%d: %s (+%d rejection(s) not logged since; "
                "all are in the dead-letter topic)", events, message.topic, message.partition,
                message.offset, reason, stats.rejections_not_logged)
    stats.last_rejection_log_ns = now_ns
    stats.rejections_not_logged = 0
