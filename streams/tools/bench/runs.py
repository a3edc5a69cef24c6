"""The measured runs: a worker subprocess timed by its progress page and its group's
committed offsets, the in-process pipeline, the plain Avro consumer (anchor b) and the
producer SDK (d)."""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.config import Settings
from streams.core.codec import SchemaSet, default_schemas
from streams.core.counters import VolumeState
from streams.core.events import IoEvent
from streams.core.ingest import Limits, Placement, account_record, legacy_event_batch
from streams.core.partitioning import default_partition
from streams.core.windows.acc import window_stats
from streams.core.windows.book import WindowSettings
from streams.core.windows.stages import PartitionWindows
from streams.sdk.producer import IoProducer
from streams.state.stages import open_partition_windows
from streams.tools.bench.procs import (
    POLL_S,
    BenchError,
    Proc,
    all_ends,
    committed_lag,
    end_offsets,
    spawn_worker,
)
from streams.tools.bench.profile import start_py_spy, stop_py_spy
from streams.tools.bench.workloads import (
    DISABLED_AGE_MS,
    PLAIN_EVENT_SCHEMA,
    batches,
    encoded_records,
)


@dataclass
class Run:
    """One timed worker run."""

    events: int
    records: int
    seconds: float  # until the committed offsets reached the end
    processed_seconds: float  # until the worker said it had processed every event
    rss_bytes: int  # after the worker's first heap release past the end (worker_run)
    units: int | None = None  # the accounting agent's units (a partition's part of a step)
    cpu_seconds: float | None = None  # the worker's CPU time over ``seconds``
    rss_at_end_bytes: int | None = None  # at the poll that saw the end, free heap and all

    @property
    def cpu_us_per_event(self) -> float | None:
        """What an event cost the worker on the CPU, waiting left out (a run's rate is
        also how long it waited: for the disk, for the broker)."""
        return None if self.cpu_seconds is None else self.cpu_seconds / self.events * 1e6

    @property
    def on_cpu(self) -> float | None:
        """The worker's CPU time / the run's seconds (1.0: one core all the time)."""
        return None if self.cpu_seconds is None else self.cpu_seconds / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds


HEAP_POLL_S = 0.1  # how often rss_after_heap_release asks whether the worker released

Progress = Callable[[Any], tuple[int, int]]  # a progress page's body -> (events, records)


@dataclass
class _Polls:
    """What timed_run's polls have seen so far."""

    t_zero: float  # the last poll that saw nothing processed
    cpu_zero: float = 0.0  # the worker's CPU seconds at t_zero
    first: tuple[float, int, int] | None = None  # (when, events, records): first progress
    t_processed: float | None = None  # when every event had been processed

    def saw(self, now: float, done: int, done_records: int) -> bool:
        """Note a poll; True on the first one that saw progress."""
        if done == 0:
            self.t_zero = now
        elif self.first is None:
            self.first = (now, done, done_records)
            return True
        return False

    def window_over(self, now: float, done: int, events: int, window_s: float) -> bool:
        return self.first is not None and (
            now - self.first[0] >= window_s or done >= events) and now > self.first[0]

    def window_run(self, now: float, done: int, done_records: int, rss_bytes: int) -> Run:
        assert self.first is not None
        when, events, records = self.first
        if done == events:  # all of it in one step, between two polls: time it from before
            return Run(done, done_records, now - self.t_zero, now - self.t_zero, rss_bytes)
        return Run(done - events, done_records - records, now - when, now - when, rss_bytes)

    def committed_run(self, events: int, records: int, end: float, rss_bytes: int) -> Run:
        assert self.t_processed is not None
        return Run(events, records, end - self.t_zero, self.t_processed - self.t_zero,
                   rss_bytes)


async def _poll(proc: Proc, progress: Progress, path: str) -> tuple[int, int] | None:
    """(events, records) the worker's progress page says; None when it does not answer
    (not started yet, or a long step holds its event loop)."""
    try:
        return progress(await asyncio.to_thread(proc.get, path))
    except (OSError, ValueError, KeyError, urllib.error.URLError):
        return None


async def timed_run(proc: Proc, progress: Progress, path: str, events: int, records: int,
                    bootstrap: str, group: str, ends: dict[TopicPartition, int],
                    timeout_s: float, window_s: float | None = None,
                    on_start: Callable[[], None] | None = None) -> Run:
    """Poll the worker's progress page every POLL_S.

    Without ``window_s``: until it has processed ``events`` and the group has committed up
    to ``ends``, timed from the last poll that saw nothing processed. With ``window_s``:
    the events and records processed between the first poll that saw progress and
    ``window_s`` later (or the poll that saw everything done, if sooner)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        polls = _Polls(time.monotonic())
        deadline = polls.t_zero + timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise BenchError(f"the worker exited ({proc.process.returncode}):\n"
                                 + proc.log_tail())
            now = time.monotonic()
            if polls.t_processed is None:
                cpu = proc.cpu_seconds()
                polled = await _poll(proc, progress, path)
                if polled is None and polls.first is not None:
                    # no answer once it has progressed: a step holds its loop (seconds at
                    # 100,000 volumes); no news, not "nothing processed", which would move
                    # the start of the timing (docs/performance.md, session 20)
                    await asyncio.sleep(POLL_S)
                    continue
                done, done_records = polled or (0, 0)
                if done == 0:
                    polls.cpu_zero = cpu
                if polls.saw(now, done, done_records) and on_start is not None:
                    on_start()
                if window_s is not None and polls.window_over(now, done, events, window_s):
                    return polls.window_run(now, done, done_records, proc.rss_bytes())
                if window_s is None and done >= events:
                    polls.t_processed = now
            if polls.t_processed is not None and await committed_lag(admin, group, ends) == 0:
                run = polls.committed_run(events, records, time.monotonic(), proc.rss_bytes())
                run.cpu_seconds = proc.cpu_seconds() - polls.cpu_zero
                return run
            await asyncio.sleep(POLL_S)
        raise BenchError(f"the worker did not finish within {timeout_s:.0f} s:\n"
                         + proc.log_tail())
    finally:
        await admin.close()


async def rss_after_heap_release(proc: Proc, timeout_s: float) -> int | None:
    """The worker's RSS just after its next heap release (``heap_releases`` of /status
    moved past what it says now); None when none comes within ``timeout_s``.

    The worker gives its free heap back on a timer (pipeline/heap.py), so an RSS read at
    any moment also holds what its last steps freed since the last release: the same code
    measured 1,194 and 2,090 B an active volume for (f) (docs/performance.md, session 27).
    Read after a release, the figure is what the worker holds."""
    deadline = time.monotonic() + timeout_s
    before: int | None = None
    while time.monotonic() < deadline:
        try:
            releases = int((await asyncio.to_thread(proc.get, "/status"))["heap_releases"])
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            releases = None
        if releases is not None and before is not None and releases > before:
            return proc.rss_bytes()
        if before is None:
            before = releases
        await asyncio.sleep(HEAP_POLL_S)
    return None


def _status_progress(body: Any) -> tuple[int, int]:
    return int(body["events_counted"]) + int(body["events_rejected"]), int(body["records"])


async def worker_run(settings: Settings, log_dir: Path, name: str, records: int, events: int,
                     timeout_s: float, profile: Path | None = None,
                     window_s: float | None = None) -> Run:
    """Run ``ioacct worker`` over what the raw topic holds now and time it (see timed_run);
    ``profile``: py-spy samples it from its first processed record on."""
    ends = await end_offsets(settings.bootstrap_servers, settings.raw_topic)
    proc = spawn_worker(settings, log_dir, name)
    spies: list[subprocess.Popen[bytes] | None] = []

    def start_profile() -> None:
        if profile is not None:
            spies.append(start_py_spy(proc.process.pid, profile))

    try:
        run = await timed_run(proc, _status_progress, "/status", events, records,
                              settings.bootstrap_servers, settings.app_id, ends, timeout_s,
                              window_s, start_profile)
        if window_s is None and settings.heap_release_s > 0:
            run.rss_at_end_bytes = run.rss_bytes
            run.rss_bytes = await rss_after_heap_release(
                proc, 3 * settings.heap_release_s + 5) or run.rss_bytes
        run.units = int((await asyncio.to_thread(proc.get, "/status"))["steps"])
        return run
    finally:
        for spy in spies:
            stop_py_spy(spy)
        proc.stop()


@dataclass
class InProcess:
    """account_record + the window stage + publishing's encoding, over dicts:
    the worker's per-record work without faust and Kafka (calibration, profiling)."""

    partitions: int = 8
    settings: WindowSettings = field(default_factory=WindowSettings)
    schemas: SchemaSet = field(default_factory=default_schemas)
    counters: dict[bytes, bytes] = field(default_factory=dict)
    table: dict[bytes, bytes] = field(default_factory=dict)
    windows: dict[int, PartitionWindows] = field(default_factory=dict)
    published: int = 0

    def _load(self, volume_id: str) -> VolumeState | None:
        snapshot = self.counters.get(volume_id.encode())
        return None if snapshot is None else VolumeState.from_snapshot(snapshot)

    def _stage(self, partition: int) -> PartitionWindows:
        windows = self.windows.get(partition)
        if windows is None:
            windows = self.windows[partition] = open_partition_windows(partition, self.table,
                                                                       self.settings)
        return windows

    def run(self, payloads: Sequence[tuple[bytes, bytes]]) -> int:
        """Process (key, payload) pairs, each in the partition Kafka's default partitioner
        gives its key; returns the events counted."""
        counted = 0
        encode = self.schemas.encode
        for key, payload in payloads:
            now_ns = time.time_ns()
            placement = Placement(key, default_partition(key, self.partitions), self.partitions)
            partition = placement.partition
            outcome = account_record(payload, placement, self._load, self.schemas, now_ns,
                                     Limits())
            windows = self._stage(partition)
            for volume in outcome.volumes:
                if volume.state is None:
                    continue
                self.counters[volume.volume_id.encode()] = volume.state.snapshot()
                for e in windows.on_events(legacy_event_batch(volume), now_ns):
                    record = window_stats(e.volume_id, e.tenant_id, e.acc)
                    record["revision"] = e.revision
                    encode("WindowStats", record)
                    self.published += 1
            for bill in windows.take_billing():
                encode("BillingRecord", bill.to_dict())
                self.published += 1
            counted += outcome.counted
        return counted


def inprocess_rate(events: Sequence[IoEvent], max_events: int, max_age_ms: int,
                   partitions: int = 8) -> float:
    """Events/s of :class:`InProcess` over these events batched so."""
    payloads = encoded_records(batches(events, max_events, max_age_ms))
    started = time.perf_counter()
    counted = InProcess(partitions).run(payloads)
    return counted / max(1e-9, time.perf_counter() - started)


async def plain_avro_consume(bootstrap: str, topic: str) -> tuple[int, int, float]:
    """Read the whole topic with a plain consumer, decoding every record with fastavro;
    (records, events, seconds from the first fetched record to the last)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await all_ends(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = {tp for tp, end in ends.items() if end > 0}
        records = events = 0
        started: float | None = None
        reader, schema = fastavro.schemaless_reader, PLAIN_EVENT_SCHEMA
        while remaining:
            fetched = await consumer.getmany(timeout_ms=1000)
            if started is None and fetched:
                started = time.perf_counter()
            for tp, messages in fetched.items():
                for message in messages:
                    events += len(reader(io.BytesIO(message.value), schema, None))  # type: ignore[arg-type]
                records += len(messages)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return records, events, time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()


async def record_call_ns(events: Sequence[IoEvent], settings: Settings) -> tuple[float, float]:
    """ns per ``IoProducer.record()`` call over these events (batches never fill or age,
    so nothing is sent), and ns per iteration of the same loop over a no-op function."""
    args = [(e.volume_id, e.tenant_id, e.op, e.status, e.offset, e.bytes, e.submit_ns,
             e.complete_ns, e.host_id) for e in events]
    quiet = settings.with_overrides(batch_max_events=len(events) + 1,
                                    batch_max_age_ms=DISABLED_AGE_MS)

    def noop(*_: Any) -> None:
        return None

    timings, baseline = [], []
    for _ in range(3):
        producer = IoProducer(quiet)  # never started: record() only buffers
        record = producer.record
        started = time.perf_counter_ns()
        for a in args:
            record(*a)
        timings.append((time.perf_counter_ns() - started) / len(args))
        await producer._kafka.stop()  # noqa: SLF001 (it never started)
        started = time.perf_counter_ns()
        for a in args:
            noop(*a)
        baseline.append((time.perf_counter_ns() - started) / len(args))
    return sorted(timings)[1], sorted(baseline)[1]


async def sdk_to_kafka(settings: Settings, events: Sequence[IoEvent]) -> tuple[float, int]:
    """Events/s from the first record() to the end of flush() (acks=all), one process;
    the SDK's own wall-clock batching, yielding to its sender every 512 events."""
    producer = IoProducer(settings)
    await producer.start()
    try:
        started = time.perf_counter()
        for n, event in enumerate(events, 1):
            producer.record_event(event)
            if n % 512 == 0:
                await asyncio.sleep(0)
        await producer.flush()
        seconds = time.perf_counter() - started
    finally:
        await producer.close()
    return len(events) / seconds, producer.records_sent
