"""The Faust app: topics, tables and the accounting agent (thin: the logic is in ingest.py).

Built by :func:`build_app` from :class:`Settings`, so tests and several workers
can run apps with their own topic prefix, web port and state directory.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import faust

from . import faust_fixes
from .accounting import VolumeState
from .codec import HEADER_LEN, SchemaSet, default_schemas
from .config import Settings
from .gap_reader import GapReader
from .ingest import Limits, RecordOutcome, account_record, dead_letter_record
from .monitoring import monitoring_key, monitoring_record
from .offsets import OffsetTracker, Verdict
from .partition_windows import LENGTHS_NS, PartitionWindows
from .tokens import TokenFeed
from .topics import TABLES
from .windowing import Emission, WindowSettings
from .windows import window_stats

log = logging.getLogger(__name__)
TICK_KEY = b"__tick__"
MINUTE_NS = 60 * 10**9
EXIT_AGENT_FAILED = 70  # EX_SOFTWARE
SOURCE_OFFSET_HEADER = "ioacct-source-offset"


@dataclass
class WorkerStats:
    """What this worker process has done since it started (GET /status)."""

    records: int = 0
    events_counted: int = 0
    replays_skipped: int = 0
    events_rejected: int = 0
    records_rejected: int = 0
    started_ns: int = field(default_factory=time.time_ns)
    records_seen_again: int = 0  # delivered twice by faust, handled once
    records_read_past_faust: int = 0  # skipped by faust, read directly (offsets.py)
    last_rejection_log_ns: int = -(10**18)
    rejections_not_logged: int = 0


@dataclass
class Pipeline:
    """Everything the agents and views share; one per worker process."""

    settings: Settings
    app: faust.App
    raw_topic: Any
    dlq_topic: Any
    counters: Any
    schemas: SchemaSet
    limits: Limits
    windows_table: Any = None
    stats_topics: dict[int, Any] = field(default_factory=dict)
    billing_topic: Any = None
    monitoring_topic: Any = None
    window_settings: WindowSettings = field(default_factory=WindowSettings)
    keep_ns: tuple[int, int, int] = (0, 0, 0)
    partitions: dict[int, PartitionWindows] = field(default_factory=dict)
    stats: WorkerStats = field(default_factory=WorkerStats)
    offsets: OffsetTracker = field(default_factory=OffsetTracker)
    gap_reader: Any = None
    token_feed: Any = None  # tokens.TokenFeed: who may call the web views
    # Partitions just assigned -> the group's committed offset: outputs made at or past
    # it are sent again before anything else (PartitionWindows.replay_outputs).
    replay_from: dict[int, int] = field(default_factory=dict)

    def windows_for(self, partition: int) -> PartitionWindows:
        """The partition's windows, rebuilt from the table on first use after assignment."""
        windows = self.partitions.get(partition)
        if windows is None:
            windows = PartitionWindows(partition, self.windows_table, self.window_settings,
                                       self.keep_ns, self.settings.retention_s * 10**9)
            self.partitions[partition] = windows
        return windows

    def load_state(self, volume_id: str) -> VolumeState | None:
        snapshot = self.counters.get(volume_id.encode())
        return None if snapshot is None else VolumeState.from_snapshot(snapshot)


def build_app(settings: Settings) -> Pipeline:
    """The worker's Faust app with its topics, tables, agents and web views."""
    faust_fixes.apply()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        topic_partitions=settings.partitions,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.web_url,
        datadir=str(settings.state_dir / f"worker-{settings.topic_prefix}-{settings.web_port}"),
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        # A worker killed -9 holds its partitions until the session times out: faust's
        # 60 s default left them unprocessed for over a minute in the chaos runs.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 5),
        processing_guarantee=settings.processing_guarantee,
    )
    raw_topic = app.topic(
        settings.raw_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", partitions=settings.partitions, internal=False,
    )
    dlq_topic = app.topic(
        settings.dlq_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", internal=False,
    )
    # Key = volume_id as raw UTF-8, the same bytes the producer keys ioacct.io.raw
    # with, so table_route finds the owner with the producer's partitioner.
    # key_type/value_type bytes make faust use the raw codec (anything else means JSON,
    # whose quoted keys would hash to other partitions than the producer's).
    counters = app.Table(
        TABLES[0], key_type=bytes, value_type=bytes, partitions=settings.partitions,
        default=None, help="VolumeState snapshot per volume_id",
    )
    limits = Limits(settings.retention_s * 10**9, settings.future_tolerance_s * 10**9)
    pipeline = Pipeline(settings, app, raw_topic, dlq_topic, counters, default_schemas(), limits)
    pipeline.gap_reader = GapReader(settings)
    pipeline.token_feed = TokenFeed(settings)

    @app.task
    async def follow_tokens() -> None:
        """Tokens created or revoked reach every worker's views without a restart."""
        await pipeline.token_feed.run()

    _add_windows(pipeline)
    _register_accounting(pipeline)
    _register_ticks(pipeline)
    from .web import register_views  # web.py imports this module's Pipeline

    register_views(pipeline)
    return pipeline


def _add_windows(p: Pipeline) -> None:
    s = p.settings
    # One entry per (partition, window length, volume, start); see partition_windows.py.
    p.windows_table = p.app.Table(
        TABLES[1], key_type=bytes, value_type=bytes, partitions=s.partitions, default=None,
        help="open and revisable windows, rollup parts and watermarks per partition",
    )
    for length_ns in LENGTHS_NS:
        p.stats_topics[length_ns] = p.app.topic(
            s.stats_topic(length_ns), key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw", partitions=s.partitions, internal=False,
        )
    p.billing_topic = p.app.topic(
        s.billing_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", partitions=s.partitions, internal=False,
    )
    p.monitoring_topic = p.app.topic(
        s.monitoring_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", partitions=s.partitions, internal=False,
    )
    horizon_ns = s.revision_horizon_s * 10**9
    p.window_settings = WindowSettings(int(s.grace_s * 1e9), int(s.idle_timeout_s * 1e9),
                                       horizon_ns)
    p.keep_ns = tuple(max(0, r * 10**9 - horizon_ns)  # type: ignore[assignment]
                      for r in (s.retention_1s_s, s.retention_1m_s, s.retention_1h_s))

    @p.app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        # The next owner rebuilds from the changelog; so do we if they come back.
        for tp in revoked:
            if tp.topic == s.raw_topic:
                p.partitions.pop(tp.partition, None)
                p.offsets.forget(tp.partition)
                p.replay_from.pop(tp.partition, None)


def _register_accounting(p: Pipeline) -> None:
    tick_header = p.schemas.headers["Tick"]

    @p.app.agent(p.raw_topic, name="accounting")
    async def accounting(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                if await _in_order(p, message, tick_header):
                    await _account_record(p, event.value, message, tick_header)
                    p.offsets.done(message.partition, message.offset)
            except Exception:
                # Faust would restart the agent and ack the record it failed on: a lost
                # record. Exit instead, without committing; the restarted worker reprocesses
                # from the last commit and the (producer_id, seq) check absorbs the repeats.
                log.exception("accounting failed at %s[%d]@%d; exiting without commit",
                              message.topic, message.partition, message.offset)
                os._exit(EXIT_AGENT_FAILED)


async def _in_order(p: Pipeline, message: Any, tick_header: bytes) -> bool:
    """Whether to process ``message``: after reading any records faust skipped before it
    (see offsets.py), and not when it was handled already."""
    partition = message.partition
    if not p.offsets.knows(partition):
        committed = await p.gap_reader.committed_or_first(partition)
        p.offsets.start(partition, committed)
        p.replay_from[partition] = committed
    verdict, expected = p.offsets.check(partition, message.offset)
    if verdict is Verdict.SEEN:
        p.stats.records_seen_again += 1
        return False
    if verdict is Verdict.GAP:
        log.warning("faust delivered %s[%d]@%d but not %d..%d: reading those directly",
                    message.topic, partition, message.offset, expected, message.offset - 1)
        read = await p.gap_reader.read(partition, expected, message.offset)
        for record in read:
            await _account_record(p, record.value, record, tick_header)
            p.offsets.done(partition, record.offset)
            p.stats.records_read_past_faust += 1
        # Else faust never commits this partition again (faust_fixes.ack_offsets).
        faust_fixes.ack_offsets(p.app.consumer, message.tp, [r.offset for r in read])
    return True


async def _account_record(p: Pipeline, value: bytes, message: Any, tick_header: bytes) -> None:
    """One raw record (``message``: its topic, partition and offset): a Tick, or a batch
    to count, window, bill and dead-letter."""
    now_ns = time.time_ns()
    if message.partition in p.replay_from:
        committed = p.replay_from.pop(message.partition)
        again = p.windows_for(message.partition).replay_outputs(committed)
        log.info("%s[%d]: sending again %d window record(s) made at or past the committed "
                 "offset %d", message.topic, message.partition, len(again), committed)
        await _publish_windows(p, again, message.partition)
    if value is None:  # a null record (a tombstone) in the raw topic: dead-letter, not crash
        value = b""
    # The windows' wall clock is the record's Kafka timestamp (the broker's append time:
    # topics.py), not this process's clock: re-reading the same records after a crash
    # then closes the same windows at the same records, so re-made outputs are identical.
    wall_ns = record_wall_ns(message, now_ns)
    if value[:HEADER_LEN] == tick_header:
        await _publish_windows(
            p, p.windows_for(message.partition).on_tick(wall_ns, message.offset),
            message.partition)
        return
    outcome = account_record(value, p.load_state, p.schemas, now_ns, p.limits)
    if outcome.state is not None and outcome.volume_id is not None:
        p.counters[outcome.volume_id.encode()] = outcome.state.snapshot()
    await _publish_rejections(p, outcome, message, now_ns)
    if outcome.batch is not None and outcome.volume_id is not None:
        batch = outcome.batch
        emissions = p.windows_for(message.partition).on_events(
            outcome.volume_id, batch["tenant_id"], batch["op"], batch["status"],
            batch["bytes"], batch["submit_ns"], batch["complete_ns"], outcome.good, wall_ns,
            (batch["producer_id"], batch["seq"]), message.offset,
        )
        await _publish_windows(p, emissions, message.partition)
    _count(p.stats, outcome)


def source_offset_header(offset: int) -> list[tuple[str, bytes]]:
    """The Kafka header naming the input record (its offset in the input topic's partition:
    the raw topic for 1 s windows) whose processing made a window record, for audits and
    for checking when windows close (tests/integration/test_windows_e2e.py)."""
    return [(SOURCE_OFFSET_HEADER, b"%d" % offset)]


def record_wall_ns(message: Any, default_ns: int) -> int:
    """A raw record's Kafka timestamp in ns: faust's messages carry seconds (float),
    aiokafka's records (gap_reader.py) milliseconds (int); ``default_ns`` if it has none."""
    timestamp = getattr(message, "timestamp", None)
    if timestamp is None or timestamp < 0:
        return default_ns
    if isinstance(timestamp, float):
        return round(timestamp * 1000) * 1_000_000
    return int(timestamp) * 1_000_000


def _register_ticks(p: Pipeline) -> None:
    """Once a second, a Tick into each owned raw partition: idle partitions close windows
    from inside their own stream, where table writes land in the right changelog."""

    @p.app.timer(interval=p.settings.tick_interval_s)
    async def tick() -> None:
        raw = p.settings.raw_topic
        value = p.schemas.encode("Tick", {"wall_ns": time.time_ns(),
                                          "worker": p.settings.web_url})
        for tp in p.app.consumer.assignment():
            windows = p.partitions.get(tp.partition)
            # Only where windows are open; an unseen partition gets one, so that a restarted
            # worker rebuilds its windows from the table even if no new input ever comes.
            if tp.topic == raw and (windows is None or windows.needs_ticks):
                await p.raw_topic.send(key=TICK_KEY, value=value, partition=tp.partition)


async def _publish_windows(p: Pipeline, emissions: list[Emission], partition: int) -> None:
    """Window records, then the billing records the same input made."""
    for e in emissions:
        record = window_stats(e.volume_id, e.tenant_id, e.acc)
        record["revision"] = e.revision
        key = b"%s/%d" % (e.volume_id.encode(), e.acc.window_start_ns)
        await p.stats_topics[e.acc.window_len_ns].send(
            key=key, value=p.schemas.encode("WindowStats", record), partition=partition,
            headers=source_offset_header(e.offset))
        if e.acc.window_len_ns == MINUTE_NS:
            metrics = monitoring_record(record)
            await p.monitoring_topic.send(
                key=monitoring_key(metrics), partition=partition,
                value=p.schemas.encode("VolumeMetrics1m", metrics))
    for b in p.windows_for(partition).take_billing():
        await p.billing_topic.send(key=b.record_id.encode(),
                                   value=p.schemas.encode("BillingRecord", b.to_dict()),
                                   partition=partition)


async def _publish_rejections(
    p: Pipeline, outcome: RecordOutcome, message: Any, now_ns: int,
) -> None:
    for rejection in outcome.rejections:
        record = dead_letter_record(
            rejection, message.topic, message.partition, message.offset, now_ns
        )
        key = outcome.volume_id.encode() if outcome.volume_id else None
        await p.dlq_topic.send(key=key, value=p.schemas.encode("DeadLetter", record))
        _log_rejection(p.stats, rejection.events, message, rejection.reason)


def _log_rejection(stats: WorkerStats, events: int, message: Any, reason: str) -> None:
    # At most one line a second: a flood of bad input must not flood the log too.
    now_ns = time.monotonic_ns()
    if now_ns - stats.last_rejection_log_ns < 1_000_000_000:
        stats.rejections_not_logged += 1
        return
    log.warning("rejected %d event(s) at %s[%d]@%d: %s (+%d rejection(s) not logged since; "
                "all are in the dead-letter topic)", events, message.topic, message.partition,
                message.offset, reason, stats.rejections_not_logged)
    stats.last_rejection_log_ns = now_ns
    stats.rejections_not_logged = 0


def _count(stats: WorkerStats, outcome: RecordOutcome) -> None:
    stats.records += 1
    stats.events_counted += outcome.counted
    stats.replays_skipped += outcome.replay
    for rejection in outcome.rejections:
        stats.events_rejected += rejection.events
        stats.records_rejected += rejection.event_index is None
