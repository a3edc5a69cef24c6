"""`ioacct bench`: the throughput, latency and memory figures of issue 6, in one run.

Starts a broker of its own (free ports, a temporary state directory; stopped at
the end), gives every measurement its own topic prefix, and prints one table
(or, with ``--json``, one JSON object). What each figure measures:

(a) anchor, naive Faust: a minimal Faust app of our own (``naive_app`` below),
    one JSON Kafka record per event, an agent that updates a table entry (a dict of
    counters per volume) for every event. Events are produced beforehand, the worker
    runs as a subprocess.
(b) anchor, plain Avro: the same events in the same records as (c), but each record
    a plain Avro array of event records (SEMANTICS.md section 1, the obvious layout),
    read by a plain aiokafka consumer loop that decodes them with fastavro and does
    nothing else. In-process.
(c) the project's worker (``ioacct worker`` subprocess) over a backlog produced
    beforehand with the producer SDK: consume, validate, counters, 1 s/1 m/1 h
    windows, billing, publish, commit.
(d) the producer SDK: ns per ``record()`` call (buffering only), and events/s into
    Kafka from one process (record + flush, acks=all).
(e) latency from the end of a 1 s window (= the completion of its last event) to the
    append of its record on ``stats.1s``, with simulated events sent in real time.
(f) worker RSS per active volume, from 100 to 10,000 volumes (``--max-volumes``).
(g) how (c) and (f) change with the number of volumes and with the batch size.

Rates are timed from the last moment the worker had processed nothing (polled every
0.2 s) until the group's committed offsets reach the end of what was produced before
it started; the (g) batch-size points over a few seconds of a longer backlog. Never use
these numbers as test thresholds: the machine is shared. docs/performance.md has a run
and what its profile showed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import fastavro
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from streams.config import REPO_ROOT, Settings
from streams.core.codec import SchemaSet, default_schemas
from streams.core.counters import VolumeState
from streams.core.events import OPS, STATUSES, IoEvent
from streams.core.ingest import Limits, account_record
from streams.core.times import NS_PER_S
from streams.core.windows.acc import window_stats
from streams.core.windows.book import WindowSettings
from streams.kafka import local as kafka_local
from streams.kafka.topics import TopicSpec, topic_specs
from streams.sdk.batching import Batcher
from streams.sdk.producer import IoProducer
from streams.sources.simulator import FleetConfig, FleetSimulator
from streams.state.stages import WindowChain

POLL_S = 0.2
DISABLED_AGE_MS = 10**9  # a batch age no run reaches: batches close by size only

# Issue 6's targets.
TARGET_EVENTS_PER_S = 1_000_000
TARGET_C_OVER_B = 1.5
TARGET_C_OVER_A = 300.0
TARGET_RECORD_NS = 1_000.0
TARGET_EXTRA_LATENCY_S = 1.5  # p99 <= grace + this
TARGET_BYTES_PER_VOLUME = 2_000.0  # "2 KB"

# The obvious layout of SEMANTICS.md section 1: a record per event, the value an array.
PLAIN_EVENT_SCHEMA = fastavro.parse_schema({
    "type": "array",
    "items": {
        "type": "record", "name": "IoEvent", "namespace": "bench.plain",
        "fields": [
            {"name": "volume_id", "type": "string"},
            {"name": "tenant_id", "type": "string"},
            {"name": "host_id", "type": ["null", "string"], "default": None},
            {"name": "op", "type": {"type": "enum", "name": "Op", "symbols": list(OPS)}},
            {"name": "status",
             "type": {"type": "enum", "name": "Status", "symbols": list(STATUSES)}},
            {"name": "offset", "type": "long"},
            {"name": "bytes", "type": "long"},
            {"name": "submit_ns", "type": "long"},
            {"name": "complete_ns", "type": "long"},
        ],
    },
})


class BenchError(RuntimeError):
    """A measurement could not be made; the message says why."""


@dataclass(frozen=True)
class Plan:
    """How big each measurement is."""

    main_volumes: int = 1000
    # The fleet whose records (b) and (c) read: main_volumes Zipf volumes sending this many
    # events/s in all, batched by the SDK (1024 events or 100 ms of the events' own time).
    fleet_rate: float = 100_000.0
    worker_min_s: float = 20.0  # (c) runs at least this long
    calib_events: int = 30_000
    calib_window_s: float = 4.0  # the short worker run that sizes (c); 0: guess instead
    worker_factor_guess: float = 0.3  # worker rate / in-process rate, without that run
    b_min_events: int = 300_000
    naive_events: int = 8_000
    record_events: int = 200_000
    kafka_events: int = 200_000
    latency_s: float = 15.0
    volume_points: tuple[int, int] = (100, 10_000)
    events_per_volume_record: int = 4
    batch_points: tuple[int, ...] = (1, 16, 256, 4096)
    batch_volumes: int = 16
    point_s: float = 4.0  # work per (g) point


FULL = Plan()
QUICK = Plan(worker_min_s=2.0, calib_events=3_000, calib_window_s=0, b_min_events=20_000,
             naive_events=300, record_events=20_000, kafka_events=20_000, latency_s=6.0,
             volume_points=(100, 1_000), batch_points=(1, 256), batch_volumes=4, point_s=1.0)


# ---------------------------------------------------------------------------- events


def simulated_events(volumes: int, count: int, rate: float, end_ns: int, seed: int = 6
                     ) -> list[IoEvent]:
    """``count`` events of the simulated fleet at ``rate`` events/s, ending about ``end_ns``."""
    start_ns = end_ns - int(count / rate * NS_PER_S)
    sim = FleetSimulator(FleetConfig(seed=seed, volumes=volumes, start_ns=start_ns,
                                     events_per_s=rate))
    return list(sim.events(count))


_BLOCK_OPS = ("read",) * 12 + ("write",) * 6 + ("flush", "discard")
_BLOCK_SIZES = (4096, 4096, 4096, 8192, 16384, 65536, 131072)


def block_events(volumes: int, per_record: int, rounds: int, end_ns: int, span_ns: int,
                 seed: int = 6) -> list[IoEvent]:
    """``rounds`` rounds in which every volume has ``per_record`` consecutive events (with
    batches of ``per_record`` events, one record per volume and round), over ``span_ns``."""
    rng = random.Random(seed)
    ids = [(f"bvol-{v:06d}", f"tenant-{v % 50:03d}", f"host-{v % 8:02d}") for v in range(volumes)]
    total = volumes * per_record * rounds
    step = max(1, span_ns // max(1, total))
    t = end_ns - span_ns
    out: list[IoEvent] = []
    for _ in range(rounds):
        for volume_id, tenant_id, host_id in ids:
            for _ in range(per_record):
                t += step
                op = _BLOCK_OPS[rng.randrange(len(_BLOCK_OPS))]
                nbytes = 0 if op == "flush" else _BLOCK_SIZES[rng.randrange(len(_BLOCK_SIZES))]
                offset = 0 if op == "flush" else 4096 * rng.randrange(1 << 20)
                latency = 1_000 + int(rng.lognormvariate(12.2, 0.5))  # median ~200 us
                out.append(IoEvent(volume_id, tenant_id, op, "ok", offset, nbytes,
                                   t - latency, t, host_id))
    return out


def event_clock(events: Iterable[IoEvent], tick_ns: int = 25_000_000
                ) -> Iterator[tuple[IoEvent, bool]]:
    """Each event, and whether the batcher's ticker (every ``tick_ns``) comes due just
    before it, on the events' own clock instead of the wall clock."""
    next_tick: int | None = None
    for event in events:
        now = event.complete_ns
        if next_tick is None:
            next_tick = now + tick_ns
        due = now >= next_tick
        if due:
            next_tick = now + tick_ns
        yield event, due


def batches(events: Iterable[IoEvent], max_events: int, max_age_ms: int,
            tick_ns: int = 25_000_000) -> list[dict[str, Any]]:
    """IoBatch records as the SDK makes them, with the events' own time as its clock."""
    batcher = Batcher("bench", max_events, max_age_ms * 1_000_000)
    out: list[dict[str, Any]] = []
    for event, tick_due in event_clock(events, tick_ns):
        if tick_due:
            out += batcher.take_ready(event.complete_ns)
        batcher.add_event(event, event.complete_ns)
    return out + batcher.take_ready(0, everything=True)


# -------------------------------------------------------------- in-process pipeline


@dataclass
class InProcess:
    """account_record + the window stages (WindowChain) + publishing's encoding, over dicts:
    the worker's per-record work without faust and Kafka (calibration, profiling)."""

    partitions: int = 8
    settings: WindowSettings = field(default_factory=WindowSettings)
    schemas: SchemaSet = field(default_factory=default_schemas)
    counters: dict[bytes, bytes] = field(default_factory=dict)
    table: dict[bytes, bytes] = field(default_factory=dict)
    windows: dict[int, WindowChain] = field(default_factory=dict)
    published: int = 0

    def _load(self, volume_id: str) -> VolumeState | None:
        snapshot = self.counters.get(volume_id.encode())
        return None if snapshot is None else VolumeState.from_snapshot(snapshot)

    def run(self, payloads: Sequence[tuple[int, bytes]]) -> int:
        """Process (partition, payload) pairs; returns the events counted."""
        counted = 0
        encode = self.schemas.encode
        for partition, payload in payloads:
            now_ns = time.time_ns()
            outcome = account_record(payload, self._load, self.schemas, now_ns, Limits())
            if outcome.state is None or outcome.volume_id is None or outcome.events is None:
                continue
            self.counters[outcome.volume_id.encode()] = outcome.state.snapshot()
            windows = self.windows.get(partition)
            if windows is None:
                windows = self.windows[partition] = WindowChain(
                    partition, self.table, self.settings)
            for e in windows.on_events(outcome.events, now_ns):
                record = window_stats(e.volume_id, e.tenant_id, e.acc)
                record["revision"] = e.revision
                encode("WindowStats", record)
                self.published += 1
            for bill in windows.take_billing():
                encode("BillingRecord", bill.to_dict())
                self.published += 1
            counted += outcome.counted
        return counted


def encoded_records(records: Sequence[dict[str, Any]], partitions: int,
                    schemas: SchemaSet | None = None) -> list[tuple[int, bytes]]:
    """(partition as the producer's partitioner picks it, IoBatch payload) per record."""
    schemas = schemas or default_schemas()
    partitioner = DefaultPartitioner()
    all_partitions = list(range(partitions))
    return [(partitioner(r["volume_id"].encode(), all_partitions, all_partitions),
             schemas.encode("IoBatch", r)) for r in records]


def inprocess_rate(events: Sequence[IoEvent], max_events: int, max_age_ms: int,
                   partitions: int = 8) -> float:
    """Events/s of :class:`InProcess` over these events batched so."""
    payloads = encoded_records(batches(events, max_events, max_age_ms), partitions)
    started = time.perf_counter()
    counted = InProcess(partitions).run(payloads)
    return counted / max(1e-9, time.perf_counter() - started)


# ------------------------------------------------------------------------- producers


class BacklogProducer(IoProducer):
    """The producer SDK with the events' own time as its clock: a backlog produced in a
    few seconds has the batches a live fleet would have made in real time."""

    async def _tick(self) -> None:  # no wall-clock ticker: send_backlog drives batching
        return None

    async def send_backlog(self, events: Iterable[IoEvent], tick_ns: int = 25_000_000) -> None:
        for event, tick_due in event_clock(events, tick_ns):
            if tick_due:
                await self._send(self.batcher.take_ready(event.complete_ns))
            self._now_ns = event.complete_ns
            self.record_event(event)
        await self.flush()


class PlainAvroProducer(BacklogProducer):
    """The same batches, each sent as a plain Avro array of event records (anchor b)."""

    async def _send(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            events = [
                {"volume_id": record["volume_id"], "tenant_id": record["tenant_id"],
                 "host_id": record["host_id"], "op": OPS[op], "status": STATUSES[status],
                 "offset": offset, "bytes": nbytes, "submit_ns": submit, "complete_ns": done}
                for op, status, offset, nbytes, submit, done in zip(
                    record["op"], record["status"], record["offset"], record["bytes"],
                    record["submit_ns"], record["complete_ns"], strict=True)
            ]
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, PLAIN_EVENT_SCHEMA, events)
            future = await self._kafka.send(self.topic, value=buf.getvalue(),
                                            key=record["volume_id"].encode())
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
            self.records_sent += 1
            self.events_sent += len(events)


async def produce_backlog(settings: Settings, events: Sequence[IoEvent],
                          cls: type[BacklogProducer] = BacklogProducer) -> tuple[int, int]:
    """Send events through the SDK (virtual clock); returns (records, events) sent."""
    producer = cls(settings)
    await producer.start()
    try:
        await producer.send_backlog(events)
    finally:
        await producer.close()
    return producer.records_sent, producer.events_sent


async def produce_json(bootstrap: str, topic: str, events: Sequence[IoEvent]) -> None:
    """One JSON record per event, keyed by volume (the naive anchor's input)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for n, event in enumerate(events):
            await producer.send(topic, key=event.volume_id.encode(),
                                value=orjson.dumps(event.to_json()))
            if n % 1000 == 999:
                await asyncio.sleep(0)
        await producer.flush()
    finally:
        await producer.stop()


# ----------------------------------------------------------------------------- kafka


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def create_topics(bootstrap: str, specs: Sequence[TopicSpec]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(s.name, s.partitions, 1,
                                                    topic_configs=s.config) for s in missing])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    await wait_leaders(bootstrap, {s.name: s.partitions for s in specs})


async def wait_leaders(bootstrap: str, topics: dict[str, int], timeout_s: float = 30) -> None:
    """Until every partition of these topics has a leader (no retries when producing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            cluster = consumer._client.cluster  # noqa: SLF001
            if all(len(cluster.partitions_for_topic(t) or ()) == n and all(
                    (cluster.leader_for_partition(TopicPartition(t, p)) or -1) >= 0
                    for p in range(n)) for t, n in topics.items()):
                return
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def pipeline_topics(settings: Settings, append_time_1s: bool = False) -> None:
    """The pipeline's topics; ``append_time_1s``: stats.1s records carry the broker's
    append time as their timestamp (latency, figure e)."""
    specs = topic_specs(settings)
    if append_time_1s:
        name = settings.stats_topic(NS_PER_S)
        specs = [replace(s, config={**s.config, "message.timestamp.type": "LogAppendTime"})
                 if s.name == name else s for s in specs]
    await create_topics(settings.bootstrap_servers, specs)


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return await _all_ends(consumer, topic)
    finally:
        await consumer.stop()


async def committed_lag(admin: AIOKafkaAdminClient, group: str,
                        ends: dict[TopicPartition, int]) -> int:
    committed = await admin.list_consumer_group_offsets(group)
    lag = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        lag += max(0, end - (meta.offset if meta is not None and meta.offset >= 0 else 0))
    return lag


# --------------------------------------------------------------------------- workers


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in vars(settings).items():
        env[f"IOACCT_{name.upper()}"] = str(value)
    env["IOACCT_BOOTSTRAP"] = settings.bootstrap_servers
    return env


@dataclass
class Proc:
    """A worker subprocess: the project's, or the naive anchor's."""

    process: subprocess.Popen[bytes]
    web_port: int
    log_path: Path
    token: str | None = None  # an operator token for the project's worker; the anchor has none

    def alive(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}",
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return orjson.loads(response.read())

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS in /proc")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 3) -> None:
        """SIGTERM, then SIGKILL: nothing a benchmark worker holds needs keeping."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(args: list[str], env: dict[str, str], web_port: int, log_path: Path) -> Proc:
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, *args], env=env, cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    return Proc(process, web_port, log_path)


def spawn_worker(settings: Settings, log_dir: Path, name: str) -> Proc:
    port = free_port()
    env = settings_env(settings.with_overrides(web_port=port))
    made = subprocess.run([sys.executable, "-m", "streams.cli", "token", "create", "--operator",
                           "--label", "bench"], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        raise BenchError(f"cannot create an operator token: {made.stderr.strip()}")
    proc = spawn(["-m", "streams.cli", "worker", "--loglevel", "warning"], env, port,
                 log_dir / f"worker-{name}.log")
    proc.token = made.stdout.strip()
    return proc


@dataclass
class Run:
    """One timed worker run."""

    events: int
    records: int
    seconds: float  # until the committed offsets reached the end
    processed_seconds: float  # until the worker said it had processed every event
    rss_bytes: int
    rollups_seconds: float | None = None  # until the rollup agents had committed too

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds


Progress = Callable[[Any], tuple[int, int]]  # a progress page's body -> (events, records)


async def timed_run(proc: Proc, progress: Progress, path: str, events: int, records: int,
                    bootstrap: str, group: str, ends: dict[TopicPartition, int],
                    timeout_s: float, window_s: float | None = None,
                    on_start: Callable[[], None] | None = None) -> Run:
    """Poll the worker's progress page every 0.2 s.

    Without ``window_s``: until it has processed ``events`` and the group has committed up
    to ``ends``, timed from the last poll that saw nothing processed. With ``window_s``:
    the events and records processed between the first poll that saw progress and
    ``window_s`` later (or the poll that saw everything done, if sooner)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        t_zero = time.monotonic()
        deadline = t_zero + timeout_s
        first: tuple[float, int, int] | None = None
        t_processed: float | None = None
        while time.monotonic() < deadline:
            if not proc.alive():
                raise BenchError(f"the worker exited ({proc.process.returncode}):\n"
                                 + proc.log_tail())
            now = time.monotonic()
            if t_processed is None:
                try:
                    done, done_records = progress(await asyncio.to_thread(proc.get, path))
                except (OSError, ValueError, KeyError, urllib.error.URLError):
                    done, done_records = 0, 0
                if done == 0:
                    t_zero = now
                elif first is None:
                    first = (now, done, done_records)
                    if on_start is not None:
                        on_start()
                if window_s is not None and first is not None and (
                        now - first[0] >= window_s or done >= events) and now > first[0]:
                    return Run(done - first[1], done_records - first[2], now - first[0],
                               now - first[0], proc.rss_bytes())
                if window_s is None and done >= events:
                    t_processed = now
            if t_processed is not None and await committed_lag(admin, group, ends) == 0:
                end = time.monotonic()
                return Run(events, records, end - t_zero, t_processed - t_zero,
                           proc.rss_bytes())
            await asyncio.sleep(POLL_S)
        raise BenchError(f"the worker did not finish within {timeout_s:.0f} s:\n"
                         + proc.log_tail())
    finally:
        await admin.close()


def _status_progress(body: Any) -> tuple[int, int]:
    return int(body["events_counted"]) + int(body["events_rejected"]), int(body["records"])


async def worker_run(settings: Settings, log_dir: Path, name: str, records: int, events: int,
                     timeout_s: float, profile: Path | None = None,
                     window_s: float | None = None, rollups: bool = False) -> Run:
    """Run ``ioacct worker`` over what the raw topic holds now and time it (see timed_run);
    ``profile``: py-spy samples it from its first processed record on; ``rollups``: then
    also time until the rollup agents have committed what the stats topics hold."""
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
        if rollups:
            run.rollups_seconds = run.seconds + await rollups_caught_up(settings, proc,
                                                                        timeout_s)
        return run
    finally:
        for spy in spies:
            stop_py_spy(spy)
        proc.stop()


async def rollups_caught_up(settings: Settings, proc: Proc, timeout_s: float) -> float:
    """Seconds until the group has committed everything the topics the rollup agents read
    (ioacct.stats.1s, .1m) hold at that moment."""
    started = time.monotonic()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    await consumer.start()  # one client for all polls: a new one per poll took CPU from the worker
    try:
        while time.monotonic() - started < timeout_s:
            if not proc.alive():
                raise BenchError("the worker exited:\n" + proc.log_tail())
            ends: dict[TopicPartition, int] = {}
            for length_ns in (NS_PER_S, 60 * NS_PER_S):
                ends.update(await _all_ends(consumer, settings.stats_topic(length_ns)))
            if await committed_lag(admin, settings.app_id, ends) == 0:
                return time.monotonic() - started
            await asyncio.sleep(POLL_S)
        raise BenchError("the rollup agents did not catch up:\n" + proc.log_tail())
    finally:
        await consumer.stop()
        await admin.close()


# ------------------------------------------------------------------ naive anchor (a)


NAIVE_TABLE = "volume-counters"


def naive_app(bootstrap: str, app_id: str, topic: str, partitions: int, web_port: int,
              datadir: str) -> Any:
    """What a Faust user writes first: a record per event, a table write per event."""
    import faust

    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://",
                    topic_partitions=partitions, web_host="127.0.0.1", web_port=web_port,
                    datadir=datadir, autodiscover=False, consumer_auto_offset_reset="earliest")
    events = app.topic(topic, key_type=bytes, key_serializer="raw", value_serializer="json")
    counters = app.Table(NAIVE_TABLE, default=dict, partitions=partitions)
    processed = [0]  # instrumentation for the benchmark, not part of the anchor's work

    @app.agent(events)
    async def account(stream: Any) -> None:
        async for event in stream:
            volume = event["volume_id"]
            counts = counters[volume]
            prefix = f"{event['op']}_{event['status']}"
            counts[prefix + "_ios"] = counts.get(prefix + "_ios", 0) + 1
            counts[prefix + "_bytes"] = counts.get(prefix + "_bytes", 0) + event["bytes"]
            counts[prefix + "_time_ns"] = (counts.get(prefix + "_time_ns", 0)
                                           + event["complete_ns"] - event["submit_ns"])
            counters[volume] = counts
            processed[0] += 1

    @app.page("/progress")
    async def progress(web: Any, request: Any) -> Any:
        return web.json({"events": processed[0]})

    return app


def run_naive_worker(argv: list[str]) -> int:
    import faust

    p = argparse.ArgumentParser()
    for name in ("--bootstrap", "--app-id", "--topic", "--datadir"):
        p.add_argument(name, required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--web-port", type=int, required=True)
    a = p.parse_args(argv)
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = naive_app(a.bootstrap, a.app_id, a.topic, a.partitions, a.web_port, a.datadir)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
    return 0


async def naive_run(base: Settings, prefix: str, events: Sequence[IoEvent], log_dir: Path
                    ) -> Run:
    bootstrap, partitions = base.bootstrap_servers, base.partitions
    app_id, topic = f"{prefix}-naive", f"{prefix}.naive.events"
    await create_topics(bootstrap, [
        TopicSpec(topic, partitions, {}),
        TopicSpec(f"{app_id}-{NAIVE_TABLE}-changelog", partitions, {"cleanup.policy": "compact"}),
    ])
    await produce_json(bootstrap, topic, events)
    ends = await end_offsets(bootstrap, topic)
    port = free_port()
    proc = spawn(["-m", "streams.tools.bench.runs", "naive-worker", "--bootstrap", bootstrap,
                  "--app-id", app_id, "--topic", topic, "--partitions", str(partitions),
                  "--web-port", str(port), "--datadir", str(log_dir / f"naive-{prefix}")],
                 dict(os.environ), port, log_dir / "worker-naive.log")
    try:
        return await timed_run(proc, lambda body: (int(body["events"]),) * 2, "/progress",
                               len(events), len(events), bootstrap, app_id, ends,
                               timeout_s=120 + len(events) / 100)
    finally:
        proc.stop()


# ------------------------------------------------------------ plain Avro anchor (b)


async def plain_avro_consume(bootstrap: str, topic: str) -> tuple[int, int, float]:
    """Read the whole topic with a plain consumer, decoding every record with fastavro;
    (records, events, seconds from the first fetched record to the last)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await _all_ends(consumer, topic)
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


async def _all_ends(consumer: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    return dict(await consumer.end_offsets(tps))


# ----------------------------------------------------------------- producer SDK (d)


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


# ------------------------------------------------------------------------ latency (e)


@dataclass
class Latency:
    rate_target: float
    rate_sent: float
    windows: int
    p50_s: float
    p99_s: float
    max_s: float


async def latency_run(settings: Settings, log_dir: Path, rate: float, duration_s: float,
                      volumes: int) -> Latency:
    """Simulated events sent in real time at ``rate`` while a worker runs; for each 1 s
    window record (revision 0) of the steady part, its append time minus the window end."""
    await pipeline_topics(settings, append_time_1s=True)
    proc = spawn_worker(settings, log_dir, "latency")
    try:
        deadline = time.monotonic() + 120
        while True:
            if not proc.alive():
                raise BenchError("the latency worker exited:\n" + proc.log_tail())
            try:
                if proc.get("/status")["assigned_partitions"]:
                    break
            except (OSError, ValueError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise BenchError("the latency worker was never assigned:\n" + proc.log_tail())
            await asyncio.sleep(POLL_S)
        await asyncio.sleep(1.0)  # let it finish recovery and fetch
        start_ns = time.time_ns()
        sim = FleetSimulator(FleetConfig(seed=7, volumes=volumes, start_ns=start_ns,
                                         events_per_s=rate))
        end_ns = start_ns + int(duration_s * NS_PER_S)
        sent = 0
        producer = IoProducer(settings)
        await producer.start()
        try:
            while (now := time.time_ns()) < end_ns:
                for event in sim.events_until(now):
                    producer.record_event(event)
                    sent += 1
                await asyncio.sleep(0.005)
        finally:
            await producer.close()
        sent_s = (time.time_ns() - start_ns) / NS_PER_S
        ends = await end_offsets(settings.bootstrap_servers, settings.raw_topic)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            wait_until = time.monotonic() + 120 + duration_s * 10
            while await committed_lag(admin, settings.app_id, ends) > 0:
                if not proc.alive() or time.monotonic() > wait_until:
                    raise BenchError("the latency worker did not catch up:\n" + proc.log_tail())
                await asyncio.sleep(POLL_S)
        finally:
            await admin.close()
        grace_ns = int(settings.grace_s * NS_PER_S)
        lo, hi = start_ns + NS_PER_S, end_ns - grace_ns - NS_PER_S // 2
        latencies = await window_latencies(settings, lo, hi)
    finally:
        proc.stop()
    if not latencies:
        raise BenchError("no 1 s window records in the steady part of the latency run")
    latencies.sort()
    return Latency(rate, sent / sent_s, len(latencies), percentile(latencies, 0.50),
                   percentile(latencies, 0.99), latencies[-1])


async def window_latencies(settings: Settings, lo_ns: int, hi_ns: int) -> list[float]:
    """(append time - window end) in s, for revision-0 1 s windows inside [lo, hi]."""
    schemas = default_schemas()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await _all_ends(consumer, settings.stats_topic(NS_PER_S))
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = {tp for tp, end in ends.items() if end > 0}
        out: list[float] = []
        while remaining:
            fetched = await consumer.getmany(timeout_ms=2000)
            if not fetched:
                break
            for tp, messages in fetched.items():
                for m in messages:
                    if m.timestamp_type != 1:
                        raise BenchError("stats.1s records do not carry the append time")
                    name, w = schemas.decode(m.value)
                    if name != "WindowStats":  # a watermark marker (schemas/watermark.avsc)
                        continue
                    end = w["window_start_ns"] + w["window_length_ns"]
                    if w["revision"] == 0 and w["window_start_ns"] >= lo_ns and end <= hi_ns:
                        out.append((m.timestamp * 1_000_000 - end) / NS_PER_S)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


# --------------------------------------------------------------------------- profile


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print(f"--profile: py-spy not found (pip install py-spy); {out} not written",
              file=sys.stderr)
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "100",
                             "--format", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def summarize_profile(path: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of the samples per function, from py-spy's raw output."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";")[1:] if f and not f.startswith("thread")]
        frames = [_short_frame(f) for f in frames]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if total == 0:
        return {"self": [], "inclusive": []}
    return {"self": [(f, n / total) for f, n in self_counts.most_common(top)],
            "inclusive": [(f, n / total) for f, n in incl_counts.most_common(top * 3)]}


def _short_frame(frame: str) -> str:
    """'add_events (streams/windowing.py:112)' -> 'add_events (windowing.py)'."""
    name, _, where = frame.partition(" (")
    filename = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 and parts[-2] != "streams" else Path(
        filename).name
    return f"{name} ({short})"


# ------------------------------------------------------------------------- the bench


@dataclass
class Bench:
    base: Settings
    plan: Plan
    log_dir: Path
    profile: Path | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    figures: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    points: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda _: None

    def settings(self, name: str, **overrides: Any) -> Settings:
        return self.base.with_overrides(topic_prefix=f"b{self.run_id}{name}", **overrides)

    def step(self, text: str) -> None:
        self.progress(f"[{time.strftime('%H:%M:%S')}] {text}")

    def main_events(self, count: int) -> list[IoEvent]:
        """The fleet of (b) and (c), its last event about now."""
        return simulated_events(self.plan.main_volumes, count, self.plan.fleet_rate,
                                time.time_ns())

    async def run(self) -> None:
        plan = self.plan
        self.step("calibrating in-process")
        calib = self.main_events(plan.calib_events)
        inprocess = inprocess_rate(calib, self.base.batch_max_events, self.base.batch_max_age_ms)
        self.info["inprocess_events_per_s"] = inprocess
        worker_rate = await self.calibrate_worker(inprocess)
        n_c = max(1, int(worker_rate * plan.worker_min_s * 1.2))
        n_b = max(n_c, plan.b_min_events)
        self.step(f"simulating {n_b:,} events for (b), the first {n_c:,} of them for (c)")
        started = time.perf_counter()
        events = self.main_events(n_b)
        sim_rate = n_b / (time.perf_counter() - started)
        await self.plain_avro(events)
        await self.worker_main(events[:n_c])
        await self.naive(events[:plan.naive_events])
        await self.producer_sdk(events)
        del events
        await self.latency(sim_rate)
        await self.volume_points()
        await self.batch_points()

    async def calibrate_worker(self, inprocess: float) -> float:
        """A short time-boxed worker run on the (c) layout: how big (c) must be."""
        plan = self.plan
        if plan.calib_window_s <= 0:
            guess = inprocess * plan.worker_factor_guess
            self.info["sizing_run"] = {"events_per_s": guess, "records_per_s": 200.0}
            self.info["worker_factor"] = plan.worker_factor_guess
            return guess
        s = self.settings("c0")
        await pipeline_topics(s)
        n = max(1000, int(inprocess * plan.calib_window_s))
        self.step(f"sizing (c): a {plan.calib_window_s:g} s worker run ({n:,} events ready)")
        records, sent = await produce_backlog(s, self.main_events(n))
        run = await worker_run(s, self.log_dir, "c0", records, sent, 120 + sent / 100,
                               window_s=plan.calib_window_s)
        self.info["sizing_run"] = {"events_per_s": run.events_per_s,
                                   "records_per_s": run.records_per_s}
        self.info["worker_factor"] = run.events_per_s / inprocess
        return run.events_per_s

    async def plain_avro(self, events: Sequence[IoEvent]) -> None:
        s = self.settings("b")
        await create_topics(s.bootstrap_servers, [TopicSpec(s.raw_topic, s.partitions, {})])
        self.step(f"(b) producing {len(events):,} events in the plain Avro layout")
        records, sent = await produce_backlog(s, events, PlainAvroProducer)
        self.step("(b) consuming and decoding")
        got_records, got_events, seconds = await plain_avro_consume(s.bootstrap_servers,
                                                                    s.raw_topic)
        if (got_records, got_events) != (records, sent):
            raise BenchError(f"(b) read {got_records} records / {got_events} events, "
                             f"sent {records} / {sent}")
        self.figures["b_events_per_s"] = got_events / seconds
        self.figures["b_records_per_s"] = got_records / seconds
        self.info["b"] = {"events": got_events, "records": got_records, "seconds": seconds,
                          "events_per_record": got_events / got_records}

    async def worker_main(self, events: Sequence[IoEvent]) -> None:
        s = self.settings("c")
        await pipeline_topics(s)
        self.step("(c) producing the backlog with the SDK")
        records, sent = await produce_backlog(s, events)
        self.step(f"(c) worker over {sent:,} events in {records:,} records")
        run = await worker_run(s, self.log_dir, "c", records, sent, 300 + sent / 200,
                               self.profile, rollups=True)
        self.figures["c_events_per_s"] = run.events_per_s
        self.figures["c_records_per_s"] = run.records_per_s
        self.figures["c_processed_events_per_s"] = run.events / run.processed_seconds
        self.figures["c_seconds"] = run.seconds
        self.figures["c_with_rollups_events_per_s"] = run.events / (run.rollups_seconds
                                                                    or run.seconds)
        self.figures["c_worker_rss_bytes"] = run.rss_bytes
        self.info["c"] = {"events": sent, "records": records, "events_per_record": sent / records,
                          "volumes": self.plan.main_volumes, "fleet_rate": self.plan.fleet_rate}
        if self.profile is not None and self.profile.exists():
            self.info["profile"] = summarize_profile(self.profile)

    async def naive(self, events: Sequence[IoEvent]) -> None:
        self.step(f"(a) naive Faust over {len(events):,} events")
        run = await naive_run(self.base, f"b{self.run_id}a", events, self.log_dir)
        self.figures["a_events_per_s"] = run.events_per_s
        self.info["a"] = {"events": run.events, "seconds": run.seconds}

    async def producer_sdk(self, events: Sequence[IoEvent]) -> None:
        self.step("(d) producer SDK")
        n = min(len(events), self.plan.record_events)
        per_call, loop_ns = await record_call_ns(events[:n], self.base)
        self.figures["d_record_ns_per_event"] = per_call
        self.figures["d_loop_ns_per_event"] = loop_ns
        s = self.settings("d")
        await create_topics(s.bootstrap_servers, [TopicSpec(s.raw_topic, s.partitions, {})])
        n_kafka = min(len(events), self.plan.kafka_events)
        rate, records = await sdk_to_kafka(s, events[:n_kafka])
        self.figures["d_sdk_events_per_s"] = rate
        self.info["d"] = {"record_events": n, "kafka_events": n_kafka, "kafka_records": records}

    async def latency(self, sim_rate: float) -> None:
        c = self.figures["c_events_per_s"]
        # One process simulates, buffers and sends: at most half of what it can do alone.
        capacity = 1 / (1 / sim_rate + 1 / self.figures["d_sdk_events_per_s"])
        rate = min(c / 2, capacity / 2)
        # The fleet of (c) scaled down to this rate: per-volume rates, and so the records'
        # sizes, as in (c). (All of (c)'s volumes at this rate would send records of an
        # event or two, and the worker would lag behind instead of showing its latency.)
        volumes = max(1, round(self.plan.main_volumes * rate / self.plan.fleet_rate))
        self.step(f"(e) latency at {rate:,.0f} events/s from {volumes:,} volumes for "
                  f"{self.plan.latency_s:.0f} s")
        lat = await latency_run(self.settings("e"), self.log_dir, rate, self.plan.latency_s,
                                volumes)
        self.figures["e_p50_s"] = lat.p50_s
        self.figures["e_p99_s"] = lat.p99_s
        self.figures["e_max_s"] = lat.max_s
        self.figures["e_rate_sent"] = lat.rate_sent
        self.info["e"] = {"rate_target": rate, "half_of_c": c / 2, "windows": lat.windows,
                          "one_process_capacity": capacity, "volumes": volumes}

    async def _block_point(self, name: str, volumes: int, per_record: int, events: int,
                           window_s: float | None) -> dict[str, float]:
        """A worker over ``volumes`` volumes, records of exactly ``per_record`` events;
        ``window_s``: time-boxed (see timed_run), else until everything is committed."""
        rounds = max(1, math.ceil(events / (volumes * per_record)))
        total = volumes * per_record * rounds
        events_list = block_events(volumes, per_record, rounds, time.time_ns(),
                                   max(NS_PER_S, int(total / self.plan.fleet_rate * NS_PER_S)))
        s = self.settings(name, batch_max_events=per_record, batch_max_age_ms=DISABLED_AGE_MS)
        await pipeline_topics(s)
        self.step(f"(g) {volumes:,} volumes, {per_record} events/record, {total:,} events")
        records, sent = await produce_backlog(s, events_list)
        del events_list
        run = await worker_run(s, self.log_dir, name, records, sent, 300 + records / 20,
                               window_s=window_s)
        return {"volumes": volumes, "events_per_record": per_record,
                "events": run.events, "records": run.records, "events_per_s": run.events_per_s,
                "records_per_s": run.records_per_s, "seconds": run.seconds,
                "rss_bytes": run.rss_bytes, "until_committed": float(window_s is None)}

    async def volume_points(self) -> None:
        """Every volume active (one record of k events each, or more for the low point)."""
        low, high = self.plan.volume_points
        k = self.plan.events_per_volume_record
        records_per_s = self.info["sizing_run"]["records_per_s"]
        n_low = max(low * k, int(records_per_s * k * self.plan.point_s))
        points = [await self._block_point(f"v{low}", low, k, n_low, None),
                  await self._block_point(f"v{high}", high, k, high * k, None)]
        self.points["volumes"] = points
        for p in points:
            self.figures[f"g_events_per_s_{p['volumes']:.0f}_volumes"] = p["events_per_s"]
            self.figures[f"f_rss_bytes_{p['volumes']:.0f}_volumes"] = p["rss_bytes"]
        per_volume = (points[1]["rss_bytes"] - points[0]["rss_bytes"]) / (high - low)
        self.figures["f_bytes_per_volume"] = per_volume
        self.info["f"] = {"volumes": [low, high]}

    async def batch_points(self) -> None:
        """Time-boxed: the backlog is generous, the rate is taken over point_s."""
        points = []
        factor = self.info["worker_factor"]
        v = self.plan.batch_volumes
        for size in self.plan.batch_points:
            sample = block_events(max(1, min(v, 20_000 // size)), size,
                                  max(1, 20_000 // (v * size)), time.time_ns(), NS_PER_S)
            estimate = inprocess_rate(sample, size, DISABLED_AGE_MS) * factor
            n = max(2 * v * size, int(2 * estimate * self.plan.point_s))
            points.append(await self._block_point(f"k{size}", v, size, n, self.plan.point_s))
            self.figures[f"g_events_per_s_batch_{size}"] = points[-1]["events_per_s"]
        self.points["batch_sizes"] = points


# ------------------------------------------------------------------------- reporting


def targets(fig: dict[str, float], grace_s: float) -> list[dict[str, Any]]:
    """Each target of issue 6: the figure, the bound, met or not, and by what factor."""
    rows = []

    def add(name: str, value: float, bound: float, higher_is_better: bool, unit: str) -> None:
        met = value >= bound if higher_is_better else value <= bound
        factor = (bound / value if higher_is_better else value / bound) if value > 0 else math.inf
        rows.append({"target": name, "value": value, "bound": bound, "unit": unit, "met": met,
                     "short_by_factor": None if met else factor,
                     "higher_is_better": higher_is_better})

    c = fig["c_events_per_s"]
    add("(c) events/s per worker", c, TARGET_EVENTS_PER_S, True, "events/s")
    add("(c)/(b)", c / fig["b_events_per_s"], TARGET_C_OVER_B, True, "x")
    add("(c)/(a)", c / fig["a_events_per_s"], TARGET_C_OVER_A, True, "x")
    add("(d) record() per event", fig["d_record_ns_per_event"], TARGET_RECORD_NS, False, "ns")
    add("(e) p99 latency", fig["e_p99_s"], grace_s + TARGET_EXTRA_LATENCY_S, False, "s")
    add("(f) RSS per active volume", fig["f_bytes_per_volume"], TARGET_BYTES_PER_VOLUME, False,
        "bytes")
    return rows


def _num(value: float, unit: str = "") -> str:
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "x":
        return f"{value:,.2f}x"
    if unit == "ns":
        return f"{value:,.0f} ns"
    if abs(value) >= 100:
        return f"{value:,.0f}" + (f" {unit}" if unit else "")
    return f"{value:,.2f}" + (f" {unit}" if unit else "")


def _verdict(row: dict[str, Any]) -> str:
    op = ">=" if row["higher_is_better"] else "<="
    bound = _num(row["bound"], row["unit"])
    if row["met"]:
        return f"target {op} {bound}: met"
    return f"target {op} {bound}: NOT met, {row['short_by_factor']:,.1f}x short"


def render(report: dict[str, Any]) -> str:
    f, info = report["figures"], report["info"]
    t = {row["target"]: row for row in report["targets"]}
    grace = report["settings"]["grace_s"]
    rows: list[tuple[str, str, str]] = [
        ("(a) naive Faust: record + table write per event", _num(f["a_events_per_s"],
         "events/s"), f"{info['a']['events']:,} events, {info['a']['seconds']:.1f} s"),
        ("(b) plain Avro array, aiokafka + fastavro decode", _num(f["b_events_per_s"],
         "events/s"), f"{_num(f['b_records_per_s'])} records/s, "
         f"{info['b']['events']:,} events"),
        ("(c) ioacct worker end to end", _num(f["c_events_per_s"], "events/s"),
         _verdict(t["(c) events/s per worker"])
         + f" (fleet of {info['c']['volumes']:,} volumes at {info['c']['fleet_rate']:,.0f}"
         " events/s)"),
        ("    records/s", _num(f["c_records_per_s"], "records/s"),
         f"{info['c']['events']:,} events in {info['c']['records']:,} records "
         f"({info['c']['events_per_record']:.0f}/record), {info['c']['volumes']:,} volumes, "
         f"{f['c_seconds']:.1f} s"),
        ("    events/s until processed (before commit)",
         _num(f["c_processed_events_per_s"], "events/s"), "from the worker's /status"),
        ("    events/s until the rollups committed too",
         _num(f["c_with_rollups_events_per_s"], "events/s"),
         "the rollup-1m and rollup-1h agents (same worker) caught up"),
        ("    (c)/(b)", _num(t["(c)/(b)"]["value"], "x"), _verdict(t["(c)/(b)"])),
        ("    (c)/(a)", _num(t["(c)/(a)"]["value"], "x"), _verdict(t["(c)/(a)"])),
        ("(d) SDK record() per event", _num(f["d_record_ns_per_event"], "ns"),
         _verdict(t["(d) record() per event"])
         + f"; the loop alone {f['d_loop_ns_per_event']:,.0f} ns"),
        ("    SDK into Kafka, one process (acks=all)", _num(f["d_sdk_events_per_s"],
         "events/s"), f"{info['d']['kafka_events']:,} events, record + flush"),
        ("(e) window end -> stats.1s append, p50", _num(f["e_p50_s"], "s"),
         f"{info['e']['windows']:,} windows, {f['e_rate_sent']:,.0f} events/s from "
         f"{info['e']['volumes']:,} volumes (half of (c): {info['e']['half_of_c']:,.0f})"),
        ("    p99", _num(f["e_p99_s"], "s"), _verdict(t["(e) p99 latency"])
         + f" (grace {grace:g} s + 1.5 s)"),
        ("(f) worker RSS per active volume", _num(f["f_bytes_per_volume"], "bytes"),
         _verdict(t["(f) RSS per active volume"]) + " (from {:,} to {:,} volumes)".format(
             *info["f"]["volumes"])),
    ]
    lines = ["ioacct bench" + (" --quick (smoke test sizes: not a measurement)"
                                if report["quick"] else ""), ""]
    width = max(len(r[0]) for r in rows) + 2
    vwidth = max(len(r[1]) for r in rows) + 2
    lines += [f"{name:<{width}}{value:>{vwidth}}   {note}" for name, value, note in rows]
    lines += ["", "(g) worker by number of volumes and by events per record:",
              f"  {'volumes':>9} {'ev/record':>10} {'events':>10} {'records':>9} "
              f"{'events/s':>10} {'records/s':>10} {'RSS MiB':>8}  timed"]
    for kind in ("volumes", "batch_sizes"):
        for p in report["points"].get(kind, []):
            timed = ("until committed" if p["until_committed"]
                     else f"{p['seconds']:.1f} s of a longer backlog")
            lines.append(f"  {p['volumes']:>9,.0f} {p['events_per_record']:>10,.0f} "
                         f"{p['events']:>10,.0f} {p['records']:>9,.0f} "
                         f"{p['events_per_s']:>10,.0f} {p['records_per_s']:>10,.0f} "
                         f"{p['rss_bytes'] / 2**20:>8.1f}  {timed}")
    lines += ["", *EXPLANATION]
    prof = info.get("profile")
    if prof:
        lines += ["", "profile of the (c) worker (py-spy, share of samples), self time:"]
        lines += [f"  {share:6.1%}  {frame}" for frame, share in prof["self"]]
        lines += ["inclusive, the project's code and the faust/aiokafka calls under it:"]
        lines += [f"  {share:6.1%}  {frame}" for frame, share in prof["inclusive"]
                  if "(" in frame and not frame.split("(")[1].startswith(
                      ("asyncio/", "<frozen", "mode/", "runpy", "threading", "selectors"))]
    return "\n".join(lines)


EXPLANATION = [
    "How: one broker of the bench's own, every figure with topics of its own. (a) and (c)",
    "are worker subprocesses over input produced before they start, timed from the last",
    "poll (every 0.2 s) at which they had processed nothing until the consumer group's",
    "committed offsets reach the end of that input; (c) is sized by a short worker run to",
    "last at least 20 s. (b) and (c) carry the same events in the same records: the",
    "simulated fleet (Zipf volumes) batched by the SDK (1024 events or 100 ms) on the",
    "events' own clock, as a live fleet at that rate would send them. (d) record() is timed",
    "in-process with batches that never fill, so nothing is sent. (e): the fleet of (c)",
    "scaled down to half of (c)'s rate (fewer volumes, same per-volume rates), simulated in",
    "real time; per 1 s window record (revision 0) of the steady part, the broker's append",
    "time (LogAppendTime) minus the window's end: the latency of an event completing at the",
    "end of its window (one completing earlier in the window waits up to 1 s more).",
    "(f) = (RSS at the larger volume count - RSS at 100 volumes) / the difference, read",
    "from /proc/PID/status once the worker has committed everything, every volume having",
    "sent one record or more. (g) batch sizes: records of exactly N events, the rate taken",
    "over a few seconds of a longer backlog. The machine is shared: figures move between runs.",
]


def report_of(bench: Bench, quick: bool) -> dict[str, Any]:
    fig = bench.figures
    return {
        "quick": quick,
        "figures": fig,
        "ratios": {"c_over_b": fig["c_events_per_s"] / fig["b_events_per_s"],
                   "c_over_a": fig["c_events_per_s"] / fig["a_events_per_s"]},
        "targets": targets(fig, bench.base.grace_s),
        "points": bench.points,
        "info": bench.info,
        "settings": {"partitions": bench.base.partitions, "grace_s": bench.base.grace_s,
                     "batch_max_events": bench.base.batch_max_events,
                     "batch_max_age_ms": bench.base.batch_max_age_ms},
    }


def run_bench(quick: bool = False, profile: Path | None = None, verbose: bool = True,
              keep_logs: Path | None = None, base: Settings | None = None,
              max_volumes: int | None = None) -> dict[str, Any]:
    """Start a broker, measure everything, stop the broker; the report as a dict."""
    plan = QUICK if quick else FULL
    if max_volumes is not None:
        plan = replace(plan, volume_points=(plan.volume_points[0], max_volumes))
    state_dir = Path(tempfile.mkdtemp(prefix="ioacct-bench-"))
    base = (base or Settings.from_env()).with_overrides(
        kafka_port=free_port(), kafka_controller_port=free_port(), state_dir=state_dir)
    base = base.with_overrides(bootstrap=f"127.0.0.1:{base.kafka_port}")
    log_dir = keep_logs or state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(base, plan, log_dir, profile)
    # A producer retries while a new topic's partitions get their leaders: not news.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    if verbose:
        bench.progress = lambda text: print(text, file=sys.stderr, flush=True)
    broker = kafka_local.LocalBroker.from_settings(base)
    bench.step(f"starting a broker on {base.bootstrap_servers} (state {state_dir})")
    try:
        kafka_local.start(broker)
        asyncio.run(bench.run())
    finally:
        bench.step("stopping the broker")
        kafka_local.stop(broker)
        shutil.rmtree(state_dir, ignore_errors=True)
    return report_of(bench, quick)


def cli_bench(args: argparse.Namespace, settings: Settings) -> int:
    """`ioacct bench`: the broker, topics and ports are the bench's own; the pipeline's
    other settings (grace, batch size, ...) come from the environment as usual."""
    profile = Path(args.profile).resolve() if args.profile else None
    try:
        report = run_bench(args.quick, profile, base=settings,
                           keep_logs=Path(args.logs).resolve() if args.logs else None,
                           max_volumes=getattr(args, "max_volumes", None))
    except (BenchError, kafka_local.KafkaError) as exc:
        print(f"ioacct bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["naive-worker"]:
        sys.exit(run_naive_worker(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} naive-worker ... (use `ioacct bench`)")
