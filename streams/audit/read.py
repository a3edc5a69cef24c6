"""The audit's Kafka side: read the raw, billing and stats topics with a fresh consumer.

One AIOKafkaConsumer with no group (nothing committed, no worker state touched)
snapshots the end offsets of the billing and stats topics, then of the raw topic, and
reads each topic from its beginning up to those ends: records published later, or raw
records written later, are not part of this audit. The raw records go to a
:class:`streams.audit.replay.Replay`, the published ones to the ledgers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tqdm import tqdm

from streams.audit.ledgers import BillingLedger, WindowLedger
from streams.audit.replay import Replay
from streams.config import Settings
from streams.core.ingest import Placement
from streams.kafka.security import client_kwargs
from streams.kafka.topics import topic_partitions

STALL_S = 60.0  # no record for this long while records are still due: give up
FETCH_RECORDS = 20_000

Ends = dict[TopicPartition, int]


class AuditError(Exception):
    """The audit could not run (no broker, no topic, ...); the message says why."""


async def read_topics(settings: Settings, replay: Replay, billing: BillingLedger,
                      windows: list[WindowLedger], started_wall_ns: int,
                      progress: bool = True) -> float:
    """Replay the raw topic and fill the ledgers; returns the seconds the replay took.

    ``started_wall_ns`` stands in for a raw record's timestamp when it has none.
    """
    consumer = await _start_consumer(settings)
    try:
        # Published first, raw second: whatever was published by then came from raw
        # records that are below the raw ends taken just after.
        billing_ends = await _ends(consumer, settings.billing_topic, settings)
        stats_ends = [await _ends(consumer, settings.stats_topic(w.length_ns), settings)
                      for w in windows]
        raw_ends = await _ends(consumer, settings.raw_topic, settings)
        replay_seconds = await _replay_raw(consumer, raw_ends, replay, started_wall_ns,
                                           progress)
        await _read(consumer, billing_ends, _feeder(billing))
        for ledger, ends in zip(windows, stats_ends, strict=True):
            await _read(consumer, ends, _feeder(ledger))
    except KafkaError as exc:
        raise AuditError(f"Kafka error while reading: {exc!r}") from exc
    finally:
        await consumer.stop()
    return replay_seconds


async def _start_consumer(settings: Settings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await consumer.stop()
        raise AuditError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    return consumer


async def _ends(consumer: AIOKafkaConsumer, topic: str, settings: Settings) -> Ends:
    tps = await topic_partitions(consumer, topic)
    if not tps:
        raise AuditError(f"no topic {topic!r} on {settings.bootstrap_servers} (wrong "
                         "--topic-prefix / IOACCT_TOPIC_PREFIX, or `ioacct topics` not run?)")
    return dict(await consumer.end_offsets(tps))


async def _replay_raw(consumer: AIOKafkaConsumer, raw_ends: Ends, replay: Replay,
                      started_wall_ns: int, progress: bool) -> float:
    """The raw topic into ``replay``, with a progress bar; returns the seconds it took."""
    raw_begins = await consumer.beginning_offsets(list(raw_ends))
    total = sum(end - raw_begins[tp] for tp, end in raw_ends.items())

    partitions = len(raw_ends)  # the topic's own count: what its producers partition by

    def replay_one(message: Any) -> None:
        if message.value is None:
            return  # a raw tombstone carries no events
        ts_ms = message.timestamp
        replay.add(message.value,
                   ts_ms * 1_000_000 if ts_ms is not None and ts_ms >= 0 else started_wall_ns,
                   Placement(message.key, message.partition, partitions))

    replay_started = time.monotonic()
    with tqdm(total=total, unit=" records", unit_scale=True, file=sys.stderr,
              desc="replaying raw", disable=None if progress else True,
              mininterval=0.5) as bar:
        await _read(consumer, raw_ends, replay_one, bar)
    return time.monotonic() - replay_started


async def _read(
    consumer: AIOKafkaConsumer, ends: Ends, handle: Callable[[Any], None],
    bar: tqdm | None = None,
) -> None:
    """Every message of ``ends``' partitions below their end offset, in partition order."""
    begins = await consumer.beginning_offsets(list(ends))
    todo = {tp for tp, end in ends.items() if end > begins[tp]}
    if not todo:
        return
    consumer.assign(sorted(todo))
    await consumer.seek_to_beginning(*todo)
    last_record = time.monotonic()
    while todo:
        batches = await consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
        for tp, messages in batches.items():
            taken = _take(messages, ends[tp], handle)
            if bar is not None:
                bar.update(taken)
        for tp in list(todo):
            if await consumer.position(tp) >= ends[tp]:
                todo.discard(tp)
                consumer.pause(tp)
        if batches:
            last_record = time.monotonic()
        elif time.monotonic() - last_record > STALL_S:
            waiting = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(todo))
            raise AuditError(f"no record arrived for {STALL_S:.0f} s from {waiting}")


def _take(messages: list[Any], end: int, handle: Callable[[Any], None]) -> int:
    """Hands the messages below ``end`` to ``handle``; returns how many."""
    taken = 0
    for message in messages:
        if message.offset >= end:
            break
        handle(message)
        taken += 1
    return taken


def _where(message: Any) -> str:
    return f"partition {message.partition} offset {message.offset}"


def _feeder(ledger: BillingLedger | WindowLedger) -> Callable[[Any], None]:
    def feed(message: Any) -> None:
        ledger.add(message.key, message.value, _where(message))

    return feed
