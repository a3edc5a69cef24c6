"""The Faust app: topics, tables and the accounting agent (thin: the logic is in ingest.py).

Built by :func:`build_app` from :class:`Settings`, so tests and several workers
can run apps with their own topic prefix, web port and state directory.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from streams.api.tokens import TokenFeed
from streams.config import Settings
from streams.core.codec import HEADER_LEN, CodecError, SchemaSet, default_schemas
from streams.core.counters import VolumeState
from streams.core.ingest import Limits, RecordOutcome, Rejection, account_record, dead_letter_record
from streams.core.keys import TICK_KEY, source_offset_header, watermark_key, window_key
from streams.core.monitoring import monitoring_key, monitoring_record
from streams.core.times import MINUTE_NS, NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS, WINDOW_NAMES, acc_from_stats, window_stats
from streams.core.windows.book import Emission, WindowSettings
from streams.core.windows.stages import PartitionWindows, RollupWindows
from streams.kafka.topics import TABLES
from streams.pipeline.guard import faust_fixes
from streams.pipeline.guard.gap_reader import GapReader
from streams.pipeline.guard.offsets import CommitWatch, OffsetTracker, Verdict
from streams.state.stages import open_partition_windows, open_rollup_windows

log = logging.getLogger(__name__)
EXIT_AGENT_FAILED = 70  # EX_SOFTWARE


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
    windows_rolled_up: int = 0  # window records read by the rollup agents
    commit_stalls: int = 0  # times a partition's commit was seen held (_register_commit_watch)
    last_rejection_log_ns: int = -(10**18)
    rejections_not_logged: int = 0


@dataclass
class InputGuard:
    """One input topic of an agent: which offsets it handled (offsets.py), and where each
    newly assigned partition's outputs must be sent again from (the committed offset)."""

    topic: str
    offsets: OffsetTracker = field(default_factory=OffsetTracker)
    # Partitions just assigned -> the group's committed offset: outputs made at or past
    # it are sent again before anything else (PartitionWindows.replay_outputs).
    replay_from: dict[int, int] = field(default_factory=dict)

    def forget(self, partition: int) -> None:
        self.offsets.forget(partition)
        self.replay_from.pop(partition, None)


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
    # Per rollup length (1 m, 1 h), per partition of the topic it reads: its stage.
    rollups: dict[int, dict[int, RollupWindows]] = field(default_factory=dict)
    stats: WorkerStats = field(default_factory=WorkerStats)
    inputs: dict[str, InputGuard] = field(default_factory=dict)  # by topic name
    gap_reader: Any = None
    token_feed: Any = None  # tokens.TokenFeed: who may call the web views

    def windows_for(self, partition: int) -> PartitionWindows:
        """The partition's windows, rebuilt from the table on first use after assignment."""
        windows = self.partitions.get(partition)
        if windows is None:
            windows = open_partition_windows(partition, self.windows_table, self.window_settings,
                                       self.keep_ns, self.settings.retention_s * NS_PER_S)
            self.partitions[partition] = windows
        return windows

    def rollups_for(self, length_ns: int, partition: int) -> RollupWindows:
        """The partition's rollup stage of ``length_ns``, rebuilt from the table on first
        use after assignment."""
        stages = self.rollups.setdefault(length_ns, {})
        stage = stages.get(partition)
        if stage is None:
            n = WINDOW_LENGTHS_NS.index(length_ns)
            stage = open_rollup_windows(partition, self.windows_table, self.window_settings,
                                  WINDOW_LENGTHS_NS[n - 1], length_ns, self.keep_ns[n])
            stages[partition] = stage
        return stage

    def windows_of(self, partition: int, volume_id: str, length_ns: int, from_ns: int,
                   to_ns: int) -> list[Any]:
        """Stored windows of one volume starting in [from_ns, to_ns) (web views)."""
        if length_ns == WINDOW_LENGTHS_NS[0]:
            return self.windows_for(partition).windows_of(volume_id, length_ns, from_ns, to_ns)
        return self.rollups_for(length_ns, partition).windows_of(volume_id, from_ns, to_ns)

    def input_guard(self, topic: str) -> InputGuard:
        return self.inputs.setdefault(topic, InputGuard(topic))

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
    limits = Limits(settings.retention_s * NS_PER_S, settings.future_tolerance_s * NS_PER_S)
    pipeline = Pipeline(settings, app, raw_topic, dlq_topic, counters, default_schemas(), limits)
    pipeline.gap_reader = GapReader(settings)
    pipeline.token_feed = TokenFeed(settings)

    @app.task
    async def follow_tokens() -> None:
        """Tokens created or revoked reach every worker's views without a restart."""
        await pipeline.token_feed.run()

    _add_windows(pipeline)
    _register_accounting(pipeline)
    for inner_ns, length_ns in zip(WINDOW_LENGTHS_NS, WINDOW_LENGTHS_NS[1:], strict=False):
        _register_rollup(pipeline, inner_ns, length_ns)
    _register_ticks(pipeline)
    _register_commit_watch(pipeline)
    from streams.api.views import register_views  # web.py imports this module's Pipeline

    register_views(pipeline)
    return pipeline


def _add_windows(p: Pipeline) -> None:
    s = p.settings
    # One entry per (partition, window length, volume, start); see partition_windows.py.
    p.windows_table = p.app.Table(
        TABLES[1], key_type=bytes, value_type=bytes, partitions=s.partitions, default=None,
        help="open and revisable windows, rollup parts and watermarks per partition",
    )
    for length_ns in WINDOW_LENGTHS_NS:
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
    horizon_ns = s.revision_horizon_s * NS_PER_S
    p.window_settings = WindowSettings(int(s.grace_s * 1e9), int(s.idle_timeout_s * 1e9),
                                       horizon_ns)
    p.keep_ns = tuple(max(0, r * NS_PER_S - horizon_ns)  # type: ignore[assignment]
                      for r in (s.retention_1s_s, s.retention_1m_s, s.retention_1h_s))

    @p.app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        # The next owner rebuilds from the changelog; so do we if they come back.
        stages_reading = {s.stats_topic(inner): length for inner, length
                          in zip(WINDOW_LENGTHS_NS, WINDOW_LENGTHS_NS[1:], strict=False)}
        for tp in revoked:
            if tp.topic == s.raw_topic:
                p.partitions.pop(tp.partition, None)
            elif tp.topic in stages_reading:
                p.rollups.get(stages_reading[tp.topic], {}).pop(tp.partition, None)
            else:
                continue
            p.input_guard(tp.topic).forget(tp.partition)


Handler = Callable[[Any, Any], Awaitable[None]]  # (value, message) -> processed


def _agent_over(p: Pipeline, topic: Any, name: str, handle: Handler) -> None:
    """An agent that hands ``handle`` every record of ``topic``, each once and in offset
    order (:func:`_in_order`), and exits the worker if it fails."""
    guard = p.input_guard(topic.get_topic_name())

    @p.app.agent(topic, name=name)
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                if await _in_order(p, guard, message, handle):
                    await handle(event.value, message)
                    guard.offsets.done(message.partition, message.offset)
            except Exception:
                # Faust would restart the agent and ack the record it failed on: a lost
                # record. Exit instead, without committing; the restarted worker reprocesses
                # from the last commit and the replay checks absorb the repeats.
                log.exception("%s failed at %s[%d]@%d; exiting without commit", name,
                              message.topic, message.partition, message.offset)
                os._exit(EXIT_AGENT_FAILED)


def _register_accounting(p: Pipeline) -> None:
    tick_header = p.schemas.headers["Tick"]

    async def handle(value: Any, message: Any) -> None:
        await _account_record(p, value, message, tick_header)

    _agent_over(p, p.raw_topic, "accounting", handle)


async def _in_order(p: Pipeline, guard: InputGuard, message: Any, handle: Handler) -> bool:
    """Whether to process ``message``: after reading any records faust skipped before it
    (see offsets.py), and not when it was handled already."""
    partition = message.partition
    if not guard.offsets.knows(partition):
        committed = await p.gap_reader.committed_or_first(partition, guard.topic)
        guard.offsets.start(partition, committed)
        guard.replay_from[partition] = committed
    verdict, expected = guard.offsets.check(partition, message.offset)
    if verdict is Verdict.SEEN:
        p.stats.records_seen_again += 1
        return False
    if verdict is Verdict.GAP:
        # The stats topics are compacted: a range may hold fewer records, or none.
        log.log(logging.WARNING if guard.topic == p.settings.raw_topic else logging.INFO,
                "faust delivered %s[%d]@%d but not %d..%d: reading those directly",
                message.topic, partition, message.offset, expected, message.offset - 1)
        read = await p.gap_reader.read(partition, expected, message.offset, guard.topic)
        for record in read:
            await handle(record.value, record)
            guard.offsets.done(partition, record.offset)
            p.stats.records_read_past_faust += 1
        # Every offset of the range, holes too: else faust never commits past it
        # (faust_fixes: ack_offsets, _add_gap).
        faust_fixes.ack_offsets(p.app.consumer, message.tp, range(expected, message.offset))
    return True


def _register_rollup(p: Pipeline, inner_ns: int, length_ns: int) -> None:
    """The agent that builds the windows of ``length_ns`` from the records of the stats
    topic of ``inner_ns`` (windows and watermark markers), partition by partition."""
    guard = p.input_guard(p.settings.stats_topic(inner_ns))

    async def handle(value: Any, message: Any) -> None:
        partition = message.partition
        stage = p.rollups_for(length_ns, partition)
        if partition in guard.replay_from:
            again = stage.replay_outputs(guard.replay_from.pop(partition))
            await _publish_stage(p, length_ns, again, partition, stage.take_marker(),
                                 message.offset)
        try:
            name, record = p.schemas.decode(value or b"")
        except CodecError as exc:
            await _dead_letter_control(p, message, value, f"undecodable stats record: {exc}")
            return
        if name == "WindowStats" and record["window_length_ns"] == inner_ns:
            part = Emission(record["volume_id"], record["tenant_id"], acc_from_stats(record),
                            record["revision"])
            made = stage.on_window(part, message.offset)
            p.stats.windows_rolled_up += 1
        elif name == "Watermark" and record["partition"] == partition:
            made = stage.on_watermark(record["watermark_ns"], message.offset,
                                      committed_offset(p, message))
        else:
            await _dead_letter_control(
                p, message, value, f"a {name} record ({record.get('window_length_ns')} ns, "
                f"partition {record.get('partition')}) does not belong in {message.topic}"
                f"[{partition}]")
            return
        await _publish_stage(p, length_ns, made, partition, stage.take_marker(), message.offset)

    _agent_over(p, p.stats_topics[inner_ns], f"rollup-{WINDOW_NAMES[length_ns]}", handle)


async def _dead_letter_control(p: Pipeline, message: Any, value: bytes | None,
                               reason: str) -> None:
    """A record of a stats topic that no rollup can take: to the dead-letter topic."""
    now_ns = time.time_ns()
    rejection = Rejection(reason, 0, payload=value or b"")  # a null record: empty, as raw ones
    await p.dlq_topic.send(key=None, value=p.schemas.encode("DeadLetter", dead_letter_record(
        rejection, message.topic, message.partition, message.offset, now_ns)))
    _log_rejection(p.stats, 0, message, reason)


async def _account_record(p: Pipeline, value: bytes, message: Any, tick_header: bytes) -> None:
    """One raw record (``message``: its topic, partition and offset): a Tick, or a batch
    to count, window, bill and dead-letter."""
    now_ns = time.time_ns()
    replay_from = p.input_guard(p.settings.raw_topic).replay_from
    if message.partition in replay_from:
        committed = replay_from.pop(message.partition)
        again = p.windows_for(message.partition).replay_outputs(committed)
        log.info("%s[%d]: sending again %d window record(s) made at or past the committed "
                 "offset %d", message.topic, message.partition, len(again), committed)
        await _publish_windows(p, again, message.partition, message.offset)
    if value is None:  # a null record (a tombstone) in the raw topic: dead-letter, not crash
        value = b""
    # The windows' wall clock is the record's Kafka timestamp (the broker's append time:
    # topics.py), not this process's clock: re-reading the same records after a crash
    # then closes the same windows at the same records, so re-made outputs are identical.
    wall_ns = record_wall_ns(message, now_ns)
    if value[:HEADER_LEN] == tick_header:
        await _publish_windows(
            p, p.windows_for(message.partition).on_tick(wall_ns, message.offset,
                                                         committed_offset(p, message)),
            message.partition, message.offset)
        return
    outcome = account_record(value, p.load_state, p.schemas, now_ns, p.limits)
    if outcome.state is not None and outcome.volume_id is not None:
        p.counters[outcome.volume_id.encode()] = outcome.state.snapshot()
    await _publish_rejections(p, outcome, message, now_ns)
    if outcome.events is not None:
        emissions = p.windows_for(message.partition).on_events(
            outcome.events, wall_ns, outcome.producer, message.offset)
        await _publish_windows(p, emissions, message.partition, message.offset)
    _count(p.stats, outcome)


def committed_offset(p: Pipeline, message: Any) -> int:
    """The offset faust last committed for the message's partition (-1: none yet): the
    stages keep the windows they emitted at or past it (their records may not have landed,
    and replay_outputs must find them after a crash)."""
    consumer: Any = p.app.consumer  # faust's own record of its commits (faust_fixes.py too)
    committed = consumer._committed_offset.get(TP(message.topic, message.partition))
    return -1 if committed is None else int(committed)


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
            if tp.topic != raw:
                continue
            windows = p.partitions.get(tp.partition)
            # Only where windows are open, here or in the rollups above (whose clock is this
            # partition's, through the markers); an unseen partition gets one, so that a
            # restarted worker rebuilds its windows from the table even if no input comes.
            if (windows is None or windows.needs_ticks
                    or any(stages[tp.partition].has_open_windows for stages in p.rollups.values()
                           if tp.partition in stages)):
                await p.raw_topic.send(key=TICK_KEY, value=value, partition=tp.partition)


COMMIT_STALL_S = 60.0  # faust commits every 2.8 s; a minute held is no hiccup


def _register_commit_watch(p: Pipeline) -> None:
    """A WARNING for every input partition whose commit stays put for a minute while
    records past it are processed (offsets.CommitWatch), with what faust holds for it."""
    watch = CommitWatch(COMMIT_STALL_S)

    @p.app.timer(interval=COMMIT_STALL_S / 6)
    async def watch_commits() -> None:
        next_offsets = {topic: guard.offsets.next_offsets for topic, guard in p.inputs.items()}
        for line in faust_fixes.held_commits(p.app.consumer, next_offsets, watch,
                                             time.monotonic()):
            p.stats.commit_stalls += 1
            log.warning("%s", line)


async def _publish_windows(p: Pipeline, emissions: list[Emission], partition: int,
                           offset: int) -> None:
    """The accounting stage's window records, then the billing records the same input
    made, then the watermark marker, if any, for the 1 m rollup."""
    windows = p.windows_for(partition)
    await _publish_stage(p, WINDOW_LENGTHS_NS[0], emissions, partition, None, offset)
    for b in windows.take_billing():
        await p.billing_topic.send(key=b.record_id.encode(),
                                   value=p.schemas.encode("BillingRecord", b.to_dict()),
                                   partition=partition)
    await _publish_marker(p, WINDOW_LENGTHS_NS[0], partition, windows.take_marker(), offset)


async def _publish_stage(p: Pipeline, length_ns: int, emissions: list[Emission],
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
    await _publish_marker(p, length_ns, partition, marker_ns, offset)


async def _publish_marker(p: Pipeline, length_ns: int, partition: int,
                          marker_ns: int | None, offset: int) -> None:
    """A watermark marker into the stats topic of ``length_ns``, if a stage reads it."""
    if marker_ns is None or length_ns == WINDOW_LENGTHS_NS[-1]:
        return
    await p.stats_topics[length_ns].send(
        key=watermark_key(partition), partition=partition,
        value=p.schemas.encode("Watermark", {"partition": partition, "watermark_ns": marker_ns}),
        headers=source_offset_header(offset))


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
    if now_ns - stats.last_rejection_log_ns < NS_PER_S:
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
