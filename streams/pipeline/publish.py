"""What the agents send: window records, billing records, watermark markers and dead
letters, each to its topic and partition, and the rate-limited log of rejections."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from streams.core.ingest import RecordOutcome, Rejection, dead_letter_record
from streams.core.keys import source_offset_header, watermark_key, window_key
from streams.core.monitoring import monitoring_key, monitoring_record
from streams.core.times import MINUTE_NS, NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS, window_stats
from streams.core.windows.book import Emission

if TYPE_CHECKING:
    from streams.pipeline.app import Pipeline, WorkerStats

log = logging.getLogger(__name__)


async def publish_windows(p: Pipeline, emissions: list[Emission], partition: int,
                          offset: int) -> None:
    """The accounting stage's window records, then the billing records the same input
    made, then the watermark marker, if any, for the 1 m rollup."""
    windows = p.windows_for(partition)
    await publish_stage(p, WINDOW_LENGTHS_NS[0], emissions, partition, None, offset)
    for b in windows.take_billing():
        await p.billing_topic.send(key=b.record_id.encode(),
                                   value=p.schemas.encode("BillingRecord", b.to_dict()),
                                   partition=partition)
    await publish_marker(p, WINDOW_LENGTHS_NS[0], partition, windows.take_marker(), offset)


async def publish_stage(p: Pipeline, length_ns: int, emissions: list[Emission],
                        partition: int, marker_ns: int | None, offset: int) -> None:
    """A stage's window records of ``length_ns`` (1 m ones also as monitoring records),
    then its marker, if any (``offset``: the input record whose processing made it)."""
    for e in emissions:
        record = window_stats(e.volume_id, e.tenant_id, e.acc)
        record["revision"] = e.revision
        key = window_key(e.volume_id, e.acc.window_start_ns)
        await p.stats_topics[e.acc.window_len_ns].send(
            key=key, value=p.schemas.encode("WindowStats", record), partition=partition,
            headers=source_offset_header(e.offset))
        if e.acc.window_len_ns == MINUTE_NS:
            metrics = monitoring_record(record)
            await p.monitoring_topic.send(
                key=monitoring_key(metrics), partition=partition,
                value=p.schemas.encode("VolumeMetrics1m", metrics))
    await publish_marker(p, length_ns, partition, marker_ns, offset)


async def publish_marker(p: Pipeline, length_ns: int, partition: int,
                         marker_ns: int | None, offset: int) -> None:
    """A watermark marker into the stats topic of ``length_ns``, if a stage reads it."""
    if marker_ns is None or length_ns == WINDOW_LENGTHS_NS[-1]:
        return
    await p.stats_topics[length_ns].send(
        key=watermark_key(partition), partition=partition,
        value=p.schemas.encode("Watermark", {"partition": partition, "watermark_ns": marker_ns}),
        headers=source_offset_header(offset))


async def publish_rejections(
    p: Pipeline, outcome: RecordOutcome, message: Any, now_ns: int,
) -> None:
    for rejection in outcome.rejections:
        record = dead_letter_record(
            rejection, message.topic, message.partition, message.offset, now_ns
        )
        key = outcome.volume_id.encode() if outcome.volume_id else None
        await p.dlq_topic.send(key=key, value=p.schemas.encode("DeadLetter", record))
        log_rejection(p.stats, rejection.events, message, rejection.reason)


async def dead_letter_control(p: Pipeline, message: Any, value: bytes | None,
                              reason: str) -> None:
    """A record of a stats topic that no rollup can take: to the dead-letter topic."""
    now_ns = time.time_ns()
    rejection = Rejection(reason, 0, payload=value or b"")  # a null record: empty, as raw ones
    await p.dlq_topic.send(key=None, value=p.schemas.encode("DeadLetter", dead_letter_record(
        rejection, message.topic, message.partition, message.offset, now_ns)))
    log_rejection(p.stats, 0, message, reason)


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
