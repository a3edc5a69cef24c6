"""Anchors (h) Kafka Streams and (i) quix-streams: the fleet's events as layout-2 records,
each anchor run as a subprocess over them, timed by its consumer group, its output checked.

Both anchors compute, per volume and 1 s event-time window (``complete_ns``), count,
bytes and latency (complete_ns - submit_ns) sum/min/max, published to an output topic
as JSON rows ``{volume, start_ms, count, bytes, latency_sum_ns, latency_min_ns,
latency_max_ns}`` (the latest row of a window holds its whole aggregate).

Both commit as often as (c)'s worker (``commit_interval_s``). The end of a run: the
group has committed the end of the input topic and then of every repartition topic of
the anchor. Both frameworks commit an input offset only after what
it produced downstream was flushed, so by then every window's last row is on the output
topic; :func:`read_windows` checks that afterwards (untimed) against the events sent.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.config import REPO_ROOT, Settings
from streams.core.codec import default_schemas
from streams.core.events import OPS, STATUSES, IoEvent
from streams.core.partitioning import default_partition
from streams.core.raw import layout2_record
from streams.core.times import NS_PER_MS
from streams.kafka.topics import TopicSpec
from streams.tools.bench.procs import (
    POLL_S,
    BenchError,
    Proc,
    all_ends,
    committed_lag,
    create_topics,
    end_offsets,
)
from streams.tools.bench.workloads import event_clock

JAVA_LIBS = REPO_ROOT / "deploy" / "bench" / "target" / "libs"
SCHEMA_PATH = REPO_ROOT / "schemas" / "io_batch2.avsc"
JAVA_MAIN = "io.ioacct.bench.WindowAnchor"
WindowKey = tuple[str, int]  # (volume id, window start in ms)


def layout2_payloads(events: Iterable[IoEvent], partitions: int, max_events: int,
                     max_age_ms: int, producer_id: str = "bench-l2"
                     ) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, IoBatch2 payload): one record per partition per flush, a partition
    flushed by size or by age on the events' own clock, as the SDK's layout 2 does."""
    encode = default_schemas().encode
    op_code = {op: i for i, op in enumerate(OPS)}
    status_code = {s: i for i, s in enumerate(STATUSES)}
    buffers: dict[int, list[IoEvent]] = defaultdict(list)
    first_ns: dict[int, int] = {}
    out: list[tuple[int, bytes, bytes]] = []
    seq = 0

    def flush(p: int) -> None:
        nonlocal seq
        buf = buffers.pop(p)
        first_ns.pop(p)
        index: dict[str, int] = {}
        tenants: list[str] = []
        for e in buf:
            if e.volume_id not in index:
                index[e.volume_id] = len(index)
                tenants.append(e.tenant_id)
        cols: dict[str, Any] = {
            "volume": [index[e.volume_id] for e in buf], "op": [op_code[e.op] for e in buf],
            "status": [status_code[e.status] for e in buf], "offset": [e.offset for e in buf],
            "bytes": [e.bytes for e in buf], "submit_ns": [e.submit_ns for e in buf],
            "complete_ns": [e.complete_ns for e in buf]}
        seq += 1
        record = layout2_record(producer_id, seq, None, list(index), tenants,
                                {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()})
        out.append((p, buf[0].volume_id.encode(), encode("IoBatch2", record)))

    for event, tick_due in event_clock(events):
        if tick_due:
            for p in [p for p, t in first_ns.items()
                      if event.complete_ns - t >= max_age_ms * NS_PER_MS]:
                flush(p)
        p = default_partition(event.volume_id.encode(), partitions)
        buffers[p].append(event)
        first_ns.setdefault(p, event.complete_ns)
        if len(buffers[p]) >= max_events:
            flush(p)
    for p in list(buffers):
        flush(p)
    return out


async def produce_layout2(settings: Settings, events: Sequence[IoEvent]) -> tuple[int, int]:
    """The events as layout-2 records on the raw topic; (records, events) sent."""
    payloads = layout2_payloads(events, settings.partitions, settings.batch_max_events,
                                settings.batch_max_age_ms)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                linger_ms=5, max_request_size=8 << 20)
    await producer.start()
    try:
        futures = [await producer.send(settings.raw_topic, value, key=key, partition=p)
                   for p, key, value in payloads]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(payloads), len(events)


@dataclass(frozen=True)
class Anchor:
    """How to start one anchor: its name, group (= application id) and command line."""

    name: str
    group: str
    command: list[str]


def java_anchor(settings: Settings, group: str, output: str, state_dir: Path) -> Anchor:
    if not (JAVA_LIBS / "ioacct-bench-streams-1.jar").exists():
        raise BenchError(f"the Kafka Streams anchor is not built: no jar in {JAVA_LIBS} "
                         "(make bench-libs)")
    return Anchor("h", group, [
        "java", "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp", f"{JAVA_LIBS}/*", JAVA_MAIN, settings.bootstrap_servers, settings.raw_topic,
        output, group, str(SCHEMA_PATH), str(state_dir), str(int(settings.grace_s * 1000)),
        str(int(settings.commit_interval_s * 1000))])


def quix_anchor(settings: Settings, group: str, output: str, state_dir: Path) -> Anchor:
    return Anchor("i", group, [
        sys.executable, "-m", "streams.tools.bench.quix_anchor",
        "--bootstrap", settings.bootstrap_servers, "--input", settings.raw_topic,
        "--output", output, "--group", group, "--schema", str(SCHEMA_PATH),
        "--state-dir", str(state_dir), "--grace-ms", str(int(settings.grace_s * 1000)),
        "--commit-s", str(settings.commit_interval_s)])


async def _repartition_ends(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer,
                            group: str) -> dict[TopicPartition, int]:
    ends: dict[TopicPartition, int] = {}
    for topic in await admin.list_topics():
        # Kafka Streams: <application id>-<name>-repartition; quix: repartition__<group>--...
        if (topic.startswith(f"{group}-") and topic.endswith("-repartition")
                or topic.startswith(f"repartition__{group}--")):
            ends.update(await all_ends(consumer, topic))
    return ends


async def timed_anchor(proc: Proc, bootstrap: str, group: str,
                       ends: dict[TopicPartition, int], timeout_s: float) -> float:
    """Seconds from the last poll at which the anchor's repartition topics were empty (it
    had produced nothing yet) until the group committed the input's and their ends."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        t_zero = time.monotonic()
        while time.monotonic() - t_zero < timeout_s:
            if not proc.alive():
                raise BenchError(f"anchor exited ({proc.process.returncode}):\n"
                                 + proc.log_tail())
            now = time.monotonic()
            rep = await _repartition_ends(admin, consumer, group)
            if sum(rep.values()) == 0:
                t_zero = now
            elif (await committed_lag(admin, group, ends) == 0
                  and await committed_lag(admin, group,
                                          await _repartition_ends(admin, consumer, group)) == 0):
                return time.monotonic() - t_zero
            await asyncio.sleep(POLL_S)
        raise BenchError(f"anchor did not finish within {timeout_s:.0f} s:\n" + proc.log_tail())
    finally:
        await consumer.stop()
        await admin.close()


async def read_windows(bootstrap: str, topic: str) -> dict[WindowKey, dict[str, int]]:
    """The output topic's latest row per (volume, window start ms)."""
    ends = await end_offsets(bootstrap, topic)
    out: dict[WindowKey, dict[str, int]] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                for m in messages:
                    row = orjson.loads(m.value)  # type: ignore[arg-type]
                    out[(row.pop("volume"), row.pop("start_ms"))] = row
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


@dataclass
class AnchorRun:
    events: int
    records: int
    seconds: float
    windows: dict[WindowKey, dict[str, int]]
    rss_bytes: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


async def anchor_run(settings: Settings, kind: str, log_dir: Path, records: int, events: int,
                     timeout_s: float) -> AnchorRun:
    """Run anchor ``kind`` ("h" or "i") over what the raw topic holds; time it, read its
    output and check that every event sent is in it."""
    output = f"{settings.topic_prefix}.anchor-{kind}.out"
    await create_topics(settings.bootstrap_servers,
                        [TopicSpec(output, settings.partitions, {})])
    group = f"{settings.topic_prefix}-anchor-{kind}"
    state_dir = Path(settings.state_dir) / f"anchor-{kind}-{group}"
    make = java_anchor if kind == "h" else quix_anchor
    anchor = make(settings, group, output, state_dir)
    ends = await end_offsets(settings.bootstrap_servers, settings.raw_topic)
    log_path = log_dir / f"anchor-{kind}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(anchor.command, cwd=REPO_ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc = Proc(process, 0, log_path)
    try:
        seconds = await timed_anchor(proc, settings.bootstrap_servers, group, ends, timeout_s)
        rss = proc.rss_bytes()
    finally:
        proc.stop(timeout_s=10)
        shutil.rmtree(state_dir, ignore_errors=True)
    windows = await read_windows(settings.bootstrap_servers, output)
    counted = sum(w["count"] for w in windows.values())
    if counted != events:
        raise BenchError(f"anchor ({kind}) output holds {counted:,} events, {events:,} sent:\n"
                         + proc.log_tail())
    return AnchorRun(events, records, seconds, windows, rss)


ANCHOR_NAMES = {"h": "Kafka Streams", "i": "quix-streams"}


async def anchor_bench(settings: Settings, kind: str, events: Sequence[IoEvent],
                       log_dir: Path) -> AnchorRun:
    """Anchor ``kind`` over these events: written as layout-2 records to a raw topic of
    its own, then run, timed and checked (see :func:`anchor_run`)."""
    await create_topics(settings.bootstrap_servers,
                        [TopicSpec(settings.raw_topic, settings.partitions, {})])
    records, sent = await produce_layout2(settings, events)
    return await anchor_run(settings, kind, log_dir, records, sent, 120 + sent / 2_000)
