"""Latency (figure e): simulated events sent in real time while a worker runs, and the
time from the end of each 1 s window to the append of its record on stats.1s."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from streams.config import Settings
from streams.core.codec import SchemaSet, default_schemas
from streams.core.times import NS_PER_MS, NS_PER_S
from streams.kafka.registry import register_volumes
from streams.kafka.security import client_kwargs
from streams.sdk.producer import IoProducer
from streams.sources.simulator import FleetConfig, FleetSimulator
from streams.tools.bench.procs import (
    POLL_S,
    BenchError,
    Proc,
    all_ends,
    committed_lag,
    end_offsets,
    pipeline_topics,
    spawn_worker,
)

SEED = 7  # the latency run's fleet


@dataclass
class Latency:
    rate_target: float
    rate_sent: float
    windows: int
    p50_s: float
    p99_s: float
    max_s: float


async def register_fleet(settings: Settings, volumes: int) -> None:
    """The volumes :func:`_send_real_time` sends from, registered (the worker counts no
    other volume)."""
    await register_volumes(settings, [(v.volume_id, v.tenant_id) for v in FleetSimulator(
        FleetConfig(seed=SEED, volumes=volumes)).volumes])


async def latency_run(settings: Settings, log_dir: Path, rate: float, duration_s: float,
                      volumes: int) -> Latency:
    """Simulated events sent in real time at ``rate`` while a worker runs; for each 1 s
    window record (revision 0) of the steady part, its append time minus the window end."""
    await pipeline_topics(settings, append_time_1s=True)
    await register_fleet(settings, volumes)  # untimed: before the worker
    proc = spawn_worker(settings, log_dir, "latency")
    try:
        await _wait_assigned(proc)
        await asyncio.sleep(1.0)  # let it finish recovery and fetch
        start_ns = time.time_ns()
        end_ns = start_ns + int(duration_s * NS_PER_S)
        sent = await _send_real_time(settings, rate, volumes, start_ns, end_ns)
        sent_s = (time.time_ns() - start_ns) / NS_PER_S
        await _wait_caught_up(settings, proc, duration_s)
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


async def _wait_assigned(proc: Proc, timeout_s: float = 120) -> None:
    """Until the worker's /status shows partitions assigned to it."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not proc.alive():
            raise BenchError("the latency worker exited:\n" + proc.log_tail())
        try:
            if proc.get("/status")["assigned_partitions"]:
                return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise BenchError("the latency worker was never assigned:\n" + proc.log_tail())
        await asyncio.sleep(POLL_S)


async def _send_real_time(settings: Settings, rate: float, volumes: int, start_ns: int,
                          end_ns: int) -> int:
    """The simulated fleet's events from ``start_ns`` to ``end_ns`` as the wall clock
    reaches them, through the SDK; returns the events sent."""
    sim = FleetSimulator(FleetConfig(seed=SEED, volumes=volumes, start_ns=start_ns,
                                     events_per_s=rate))
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
    return sent


async def _wait_caught_up(settings: Settings, proc: Proc, duration_s: float) -> None:
    """Until the worker's group has committed what the raw topic holds now."""
    ends = await end_offsets(settings.bootstrap_servers, settings.raw_topic)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        wait_until = time.monotonic() + 120 + duration_s * 10
        while await committed_lag(admin, settings.app_id, ends) > 0:
            if not proc.alive() or time.monotonic() > wait_until:
                raise BenchError("the latency worker did not catch up:\n" + proc.log_tail())
            await asyncio.sleep(POLL_S)
    finally:
        await admin.close()


async def window_latencies(settings: Settings, lo_ns: int, hi_ns: int) -> list[float]:
    """(append time - window end) in s, for revision-0 1 s windows inside [lo, hi]."""
    schemas = default_schemas()
    consumer = AIOKafkaConsumer(**client_kwargs(settings),
                                enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await all_ends(consumer, settings.stats_topic(NS_PER_S))
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = {tp for tp, end in ends.items() if end > 0}
        out: list[float] = []
        while remaining:
            fetched = await consumer.getmany(timeout_ms=2000)
            if not fetched:
                break
            for tp, messages in fetched.items():
                for message in messages:
                    latency_s = _latency_s(message, schemas, lo_ns, hi_ns)
                    if latency_s is not None:
                        out.append(latency_s)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def _latency_s(message: Any, schemas: SchemaSet, lo_ns: int, hi_ns: int) -> float | None:
    """A stats.1s record's append time minus its window's end, if it is a revision-0
    window inside [lo, hi]."""
    if message.timestamp_type != 1:
        raise BenchError("stats.1s records do not carry the append time")
    name, w = schemas.decode(message.value)
    if name != "WindowStats":  # a watermark marker (schemas/watermark.avsc)
        return None
    end = w["window_start_ns"] + w["window_length_ns"]
    if w["revision"] == 0 and w["window_start_ns"] >= lo_ns and end <= hi_ns:
        return (message.timestamp * NS_PER_MS - end) / NS_PER_S
    return None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]
