"""`ioacct audit`: replay the raw topic with a fresh consumer and diff the published records.

The I/O half of the audit (SEMANTICS.md section 6); the logic is in audit_logic.py.
One AIOKafkaConsumer with no group (nothing committed, no worker state touched)
snapshots the end offsets of the billing and stats topics, then of the raw topic, and
reads each topic from its beginning up to those ends: records published later, or raw
records written later, are not part of this audit.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tqdm import tqdm

from streams.audit.replay import AuditReport, BillingLedger, Replay, Scope, WindowLedger, compare
from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.events import id_error
from streams.core.ingest import Limits
from streams.core.times import NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.kafka.topics import topic_partitions

# An hour or window that ended less than grace + idle timeout + this before the audit
# started may still be open in the workers: missing is then not a difference.
SETTLE_MARGIN_NS = 60 * NS_PER_S
STALL_S = 60.0  # no record for this long while records are still due: give up
FETCH_RECORDS = 20_000
EXIT_OK, EXIT_DIFFERENCES, EXIT_ERROR = 0, 1, 2


class AuditError(Exception):
    """The audit could not run (no broker, no topic, ...); the message says why."""


Ends = dict[TopicPartition, int]


async def _ends(consumer: AIOKafkaConsumer, topic: str, settings: Settings) -> Ends:
    tps = await topic_partitions(consumer, topic)
    if not tps:
        raise AuditError(f"no topic {topic!r} on {settings.bootstrap_servers} (wrong "
                         "--topic-prefix / IOACCT_TOPIC_PREFIX, or `ioacct topics` not run?)")
    return dict(await consumer.end_offsets(tps))


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
            end = ends[tp]
            taken = 0
            for message in messages:
                if message.offset >= end:
                    break
                handle(message)
                taken += 1
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


def _where(message: Any) -> str:
    return f"partition {message.partition} offset {message.offset}"


def _feeder(ledger: BillingLedger | WindowLedger) -> Callable[[Any], None]:
    def feed(message: Any) -> None:
        ledger.add(message.key, message.value, _where(message))

    return feed


async def audit(settings: Settings, from_ns: int, to_ns: int, volume: str | None = None,
                progress: bool = True) -> AuditReport:
    started = time.monotonic()
    started_wall_ns = time.time_ns()
    scope = Scope(from_ns, to_ns, volume)
    schemas = default_schemas()
    limits = Limits(settings.retention_s * NS_PER_S, settings.future_tolerance_s * NS_PER_S)
    replay = Replay(scope, limits, schemas)
    billing = BillingLedger(scope, schemas)
    windows = [WindowLedger(n, scope, schemas) for n in WINDOW_LENGTHS_NS]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await consumer.stop()
        raise AuditError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    try:
        # Published first, raw second: whatever was published by then came from raw
        # records that are below the raw ends taken just after.
        billing_ends = await _ends(consumer, settings.billing_topic, settings)
        stats_ends = [await _ends(consumer, settings.stats_topic(n), settings)
                      for n in WINDOW_LENGTHS_NS]
        raw_ends = await _ends(consumer, settings.raw_topic, settings)
        raw_begins = await consumer.beginning_offsets(list(raw_ends))
        total = sum(end - raw_begins[tp] for tp, end in raw_ends.items())

        def replay_one(message: Any) -> None:
            if message.value is None:
                return  # a raw tombstone carries no events
            ts_ms = message.timestamp
            replay.add(message.value,
                       ts_ms * 1_000_000 if ts_ms is not None and ts_ms >= 0 else started_wall_ns)

        replay_started = time.monotonic()
        with tqdm(total=total, unit=" records", unit_scale=True, file=sys.stderr,
                  desc="replaying raw", disable=None if progress else True,
                  mininterval=0.5) as bar:
            await _read(consumer, raw_ends, replay_one, bar)
        replay_seconds = time.monotonic() - replay_started
        await _read(consumer, billing_ends, _feeder(billing))
        for ledger, ends in zip(windows, stats_ends, strict=True):
            await _read(consumer, ends, _feeder(ledger))
    except KafkaError as exc:
        raise AuditError(f"Kafka error while reading: {exc!r}") from exc
    finally:
        await consumer.stop()
    open_after_ns = (started_wall_ns - int(settings.grace_s * NS_PER_S)
                     - int(settings.idle_timeout_s * NS_PER_S) - SETTLE_MARGIN_NS)
    comparison = compare(replay, billing, windows, open_after_ns,
                         settings.revision_horizon_s * NS_PER_S)
    report = AuditReport.build(replay, billing, windows, comparison, replay_seconds,
                               time.monotonic() - started)
    if progress:
        print(f"ioacct audit: replayed {report.records_replayed:,} raw records "
              f"({report.events_replayed:,} events) in {replay_seconds:.1f} s: "
              f"{report.rate_events_per_s:,.0f} events/s, "
              f"{report.rate_records_per_s:,.0f} records/s; whole audit "
              f"{report.seconds:.1f} s", file=sys.stderr)
    return report


def run_audit(settings: Settings, from_ns: int, to_ns: int, volume: str | None = None,
              progress: bool = True) -> AuditReport:
    """Replay the raw topic and compare it with the published billing and stats records.

    Raises AuditError when the audit cannot run; ValueError for an empty range.
    """
    return asyncio.run(audit(settings, from_ns, to_ns, volume, progress))


def cli_audit(args: Any, settings: Settings) -> int:
    """`ioacct audit`: 0 when everything agrees, 1 on any difference, 2 when it cannot run."""
    from streams.core.times import parse_time_ns

    now_ns = time.time_ns()
    times = []
    for flag, text in (("--from", args.from_), ("--to", args.to)):
        try:
            times.append(parse_time_ns(text, now_ns))
        except ValueError as exc:
            print(f"ioacct audit: cannot read {flag} {text!r} (epoch ns, ISO 8601 or now-2h): "
                  f"{exc}", file=sys.stderr)
            return EXIT_ERROR
    from_ns, to_ns = times
    if to_ns <= from_ns:
        print(f"ioacct audit: --to ({to_ns}) must be after --from ({from_ns})", file=sys.stderr)
        return EXIT_ERROR
    if args.volume is not None and (reason := id_error("volume_id", args.volume)):
        print(f"ioacct audit: {reason}", file=sys.stderr)
        return EXIT_ERROR
    try:
        report = run_audit(settings, from_ns, to_ns, args.volume, progress=True)
    except AuditError as exc:
        print(f"ioacct audit: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json()).decode() + "\n")
    else:
        sys.stdout.write(report.text() + "\n")
    return EXIT_OK if report.ok else EXIT_DIFFERENCES
