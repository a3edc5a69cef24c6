"""The Faust app: its topics and tables, and :class:`Pipeline`, what the agents share.

Built by :func:`build_app` from :class:`Settings`, so tests and several workers can run
apps with their own topic prefix, web port and state directory. The agents are in
``agents``, what they send in ``publish``, the timers in ``timers``; the web views are
added by the worker (``streams.worker``), which composes this package with ``api``.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from streams.config import Settings
from streams.core.codec import SchemaSet, default_schemas
from streams.core.counters import VolumeState
from streams.core.ingest import Limits
from streams.core.monitoring import CloseDelays
from streams.core.registry import REGISTRY_OFF, mode_error
from streams.core.times import NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.core.windows.book import WindowSettings
from streams.core.windows.metrics_codec import MetricsEncoder
from streams.core.windows.stages import PartitionWindows
from streams.core.windows.stats_codec import WindowStatsEncoder
from streams.kafka.security import faust_credentials
from streams.kafka.topics import TABLES, compression_type, worker_max_request_bytes
from streams.pipeline import drain
from streams.pipeline.agents import register_accounting
from streams.pipeline.changelogs import ChangelogBatches, batched_changelogs
from streams.pipeline.checkpoints import SendLedger, TableCheckpoints
from streams.pipeline.guard import faust_fixes
from streams.pipeline.guard.gap_reader import GapReader
from streams.pipeline.guard.order import InputGuard
from streams.pipeline.outputs import OutputBatches, batched_outputs
from streams.pipeline.registry_feed import RegistryFeed
from streams.pipeline.tables import (
    PartitionTable,
    keep_tables_safe,
    open_tables_dir,
    store_url,
    table_options,
)
from streams.pipeline.timers import (
    register_checkpoints,
    register_commit_watch,
    register_heap_release,
    register_ticks,
)
from streams.state.stages import open_partition_windows


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
    records_dropped_revoked: int = 0  # buffered when their partition was revoked (batches.py)
    steps: int = 0  # agent steps (batches of records) handled (batches.py)
    steps_record_by_record: int = 0  # runs of a step's records judged one by one (a
    # volume of them rejected: core/step.py)
    table_checkpoints: int = 0  # checkpoints of the tables made valid (checkpoints.py)
    tables_at_start: str = ""  # kept, restored (a checkpoint), rebuilt or memory (tables.py)
    registry_catch_ups: int = 0  # volume registry reads to its end, for unknown volumes
    commit_stalls: int = 0  # times a partition's commit was seen held (timers.py)
    heap_releases: int = 0  # free heap given back to the system (timers.py, heap.py)
    dead_letters_failed: int = 0  # not even their minimal form published (publish.py)
    last_rejection_log_ns: int = -(10**18)
    rejections_not_logged: int = 0
    # Seconds from a 1 s window's end to its first emission (GET /metrics).
    close_delays: CloseDelays = field(default_factory=CloseDelays)


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
    inputs: dict[str, InputGuard] = field(default_factory=dict)  # by topic name
    gap_reader: Any = None
    registry_feed: RegistryFeed | None = None  # None: IOACCT_VOLUME_REGISTRY=off
    checkpoints: TableCheckpoints | None = None  # None: not taken (tables.checkpoints_on)
    # Per table (counters, windows): its changelog sent in batches (changelogs.py); None:
    # faust's own send per write.
    changelogs: dict[str, ChangelogBatches] = field(default_factory=dict)
    # The agents' records sent in record batches (outputs.py); None: faust's send each.
    outputs: OutputBatches | None = None
    window_encoder: WindowStatsEncoder = field(init=False)  # publish.py: WindowStats records
    metrics_encoder: MetricsEncoder = field(init=False)  # publish.py: VolumeMetrics1m records

    def __post_init__(self) -> None:
        self.window_encoder = WindowStatsEncoder.of(self.schemas)
        self.metrics_encoder = MetricsEncoder.of(self.schemas)

    def partition_table(self, table: Any, partition: int) -> PartitionTable:
        """``table``'s partition as a stage or a step writes it (tables.py)."""
        return PartitionTable(table, partition, self.changelogs.get(table.name))

    async def send_changelogs(self) -> None:
        """Hand the table writes made so far to the producer (changelogs.py): after every
        unit, before anything that waits for the writes to land or acknowledges input."""
        for batches in self.changelogs.values():
            if batches.queued:
                await batches.send()

    def windows_for(self, partition: int) -> PartitionWindows:
        """The partition's windows, rebuilt from the table on first use after assignment."""
        windows = self.partitions.get(partition)
        if windows is None:
            windows = open_partition_windows(partition,
                                             self.partition_table(self.windows_table, partition),
                                             self.window_settings, self.keep_ns,
                                             self.settings.retention_s * NS_PER_S)
            self.partitions[partition] = windows
        return windows

    def windows_of(self, partition: int, volume_id: str, length_ns: int, from_ns: int,
                   to_ns: int) -> list[Any]:
        """Stored windows of one volume starting in [from_ns, to_ns) (web views)."""
        return self.windows_for(partition).windows_of(volume_id, length_ns, from_ns, to_ns)

    def input_guard(self, topic: str) -> InputGuard:
        return self.inputs.setdefault(topic, InputGuard(topic))

    def input_positions(self) -> list[tuple[str, int, int | None, int | None, int | None]]:
        """(topic, partition, highwater, next offset to handle, committed offset) of every
        input partition assigned here (GET /metrics: consumer lag)."""
        consumer = self.app.consumer
        out = []
        for tp in consumer.assignment():
            guard = self.inputs.get(tp.topic)
            if guard is None:
                continue  # a changelog, not an agent's input
            try:
                highwater: int | None = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 (not fetched yet: unknown, not zero)
                highwater = None
            out.append((tp.topic, tp.partition, highwater,
                        guard.offsets.next_offsets.get(tp.partition),
                        consumer._committed_offset.get(tp)))  # type: ignore[attr-defined]
        return out

    def load_state(self, volume_id: str) -> VolumeState | None:
        snapshot = self.counters.get(volume_id.encode())
        return None if snapshot is None else VolumeState.from_snapshot(snapshot)


# CPython looks for reference cycles every 700 new container objects (its default); the
# accounting step makes hundreds of thousands of short-lived lists (busy intervals,
# histogram buckets) that reference counting frees anyway, and each collection walked the
# long-lived objects too: 10-20 % of the step at 100,000 volumes (docs/performance.md,
# "Session 11: the windows unit's per-window cost").
GC_THRESHOLDS = (50_000, 20, 100)


def build_app(settings: Settings) -> Pipeline:
    """The worker's Faust app with its topics, tables, agents and timers (no web views:
    the worker adds them)."""
    app = faust_app(settings)
    tables_at_start = open_tables_dir(settings, tables_dir(settings))
    raw_topic = bytes_topic(app, settings.raw_topic, settings.partitions)
    dlq_topic = bytes_topic(app, settings.dlq_topic, None)
    # Key = volume_id as raw UTF-8, the same bytes the producer keys ioacct.io.raw
    # with, so table_route finds the owner with the producer's partitioner.
    # key_type/value_type bytes make faust use the raw codec (anything else means JSON,
    # whose quoted keys would hash to other partitions than the producer's).
    counters = app.Table(
        TABLES[0], key_type=bytes, value_type=bytes, partitions=settings.partitions,
        default=None, help="VolumeState snapshot per volume_id", options=table_options(settings),
    )
    limits = Limits(settings.retention_s * NS_PER_S, settings.future_tolerance_s * NS_PER_S,
                    settings.max_events_per_record)
    pipeline = Pipeline(settings, app, raw_topic, dlq_topic, counters, default_schemas(), limits)
    pipeline.gap_reader = GapReader(settings)
    _add_registry(pipeline)
    _add_windows(pipeline)
    pipeline.stats.tables_at_start = tables_at_start
    ledger = SendLedger()
    pipeline.checkpoints = keep_tables_safe(app, settings, tables_dir(settings),
                                            (counters, pipeline.windows_table), ledger)
    if batched_changelogs(settings):
        for table in (counters, pipeline.windows_table):
            pipeline.changelogs[table.name] = ChangelogBatches(
                table, lambda: app.producer._ensure_producer(),  # type: ignore[attr-defined]
                ledger)
    if batched_outputs(settings):
        pipeline.outputs = OutputBatches(
            lambda: app.producer._ensure_producer())  # type: ignore[attr-defined]
    register_accounting(pipeline)
    register_ticks(pipeline)
    register_commit_watch(pipeline)
    register_checkpoints(pipeline)
    register_heap_release(pipeline)
    return pipeline


def _add_registry(p: Pipeline) -> None:
    """The volume registry's feed, read by a task of the app (unless it is off)."""
    reason = mode_error(p.settings.volume_registry)
    if reason is not None:
        raise ValueError(reason)
    if p.settings.volume_registry == REGISTRY_OFF:
        return
    feed = p.registry_feed = RegistryFeed(p.settings)

    @p.app.task
    async def follow_registry() -> None:
        await feed.run()


def worker_dir(settings: Settings) -> Path:
    """This worker's data dir (faust's datadir): one per topic prefix and web port."""
    return settings.state_dir / f"worker-{settings.topic_prefix}-{settings.web_port}"


def tables_dir(settings: Settings) -> Path:
    """Where the RocksDB store keeps the tables, a database per table and partition."""
    return worker_dir(settings) / "tables"


def group_instance_id(settings: Settings) -> str | None:
    """The worker's static group membership id (``IOACCT_GROUP_INSTANCE_ID``), or None."""
    chosen = settings.group_instance_id
    if chosen == "off":
        return None
    if chosen == "auto":
        return f"{settings.app_id}-{socket.gethostname()}-{settings.web_port}"
    return chosen


def faust_app(settings: Settings, app_id: str | None = None) -> faust.App:
    """The worker's faust App from its settings, with this project's fixes to faust and
    its drain of fetched records installed, before any topic, table or agent (the
    bench's floor, tools/bench/floor.py, runs its own agent on the same, under an
    ``app_id`` of its own: its consumer group)."""
    faust_fixes.apply()
    drain.install()
    return faust.App(
        app_id or settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=faust_credentials(settings),
        store=store_url(settings),
        tabledir=str(tables_dir(settings)),
        topic_partitions=settings.partitions,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.web_url,
        datadir=str(worker_dir(settings)),
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        # A worker killed -9 holds its partitions until the session times out: faust's
        # 60 s default left them unprocessed for over a minute in the chaos runs.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 5),
        broker_commit_interval=commit_interval_s(settings),
        table_standby_replicas=settings.table_standby_replicas,
        consumer_group_instance_id=group_instance_id(settings),
        processing_guarantee=settings.processing_guarantee,
        # The largest record the worker writes: a dead letter or a changelog chunk.
        producer_max_request_size=worker_max_request_bytes(settings),
        producer_compression_type=compression_type(settings),
        topic_replication_factor=settings.replication_factor,  # its own internal topics
    )


def commit_interval_s(settings: Settings) -> float:
    """The worker's commit interval (``commit_interval_s``), refused unless positive:
    faust would take 0 for its own default and a negative one for a busy loop."""
    if not settings.commit_interval_s > 0:
        raise ValueError(f"IOACCT_COMMIT_INTERVAL_S={settings.commit_interval_s}: the "
                         "worker's commit interval is a positive number of seconds")
    return settings.commit_interval_s


def bytes_topic(app: faust.App, name: str, partitions: int | None) -> Any:
    """A topic of raw bytes keys and values (the records are Avro: codec.py)."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions, internal=False)


def _add_windows(p: Pipeline) -> None:
    s = p.settings
    # One entry per (partition, window length, volume, start); see state/journal.py.
    p.windows_table = p.app.Table(
        TABLES[1], key_type=bytes, value_type=bytes, partitions=s.partitions, default=None,
        help="open and revisable windows, rollup parts and watermarks per partition",
        options=table_options(s),
    )
    for length_ns in WINDOW_LENGTHS_NS:
        p.stats_topics[length_ns] = bytes_topic(p.app, s.stats_topic(length_ns), s.partitions)
    p.billing_topic = bytes_topic(p.app, s.billing_topic, s.partitions)
    p.monitoring_topic = bytes_topic(p.app, s.monitoring_topic, s.partitions)
    horizon_ns = s.revision_horizon_s * NS_PER_S
    p.window_settings = WindowSettings(int(s.grace_s * 1e9), int(s.idle_timeout_s * 1e9),
                                       horizon_ns)
    p.keep_ns = tuple(max(0, r * NS_PER_S - horizon_ns)  # type: ignore[assignment]
                      for r in (s.retention_1s_s, s.retention_1m_s, s.retention_1h_s))
    _forget_revoked(p)


def _forget_revoked(p: Pipeline) -> None:
    s = p.settings

    @p.app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        # The next owner rebuilds from the changelog; so do we if they come back.
        for tp in revoked:
            if tp.topic == s.raw_topic:
                p.partitions.pop(tp.partition, None)
                p.input_guard(tp.topic).forget(tp.partition)
