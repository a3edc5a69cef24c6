"""The bench's workloads: the simulated fleet's events, block-shaped events of a given
record size, and their batching and producing on the events' own clock.

The SDK sends raw layout 2 (one record per partition per flush: streams/sdk/grouping.py);
``batches`` still makes layout-1 records (one volume each) for the in-process
calibration, which reads only those until ingest reads layout 2."""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import fastavro

from streams.config import Settings
from streams.core.codec import SchemaSet, default_schemas
from streams.core.events import OPS, STATUSES, IoEvent
from streams.core.raw import raw_batch
from streams.core.times import NS_PER_MS, NS_PER_S
from streams.kafka.registry import register_volumes
from streams.sdk.batching import Batcher
from streams.sdk.grouping import Outgoing, PartitionBatcher, record_bytes_bound
from streams.sdk.producer import IoProducer
from streams.sources.simulator import FleetConfig, FleetSimulator

DISABLED_AGE_MS = 10**9  # a batch age no run reaches: batches close by size only
TICK_NS = 25_000_000  # the SDK's ticker: a quarter of the default 100 ms batch age

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


def event_clock(events: Iterable[IoEvent], tick_ns: int = TICK_NS
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
            tick_ns: int = TICK_NS) -> list[dict[str, Any]]:
    """IoBatch records as the SDK makes them, with the events' own time as its clock."""
    batcher = Batcher("bench", max_events, max_age_ms * NS_PER_MS)
    out: list[dict[str, Any]] = []
    for event, tick_due in event_clock(events, tick_ns):
        if tick_due:
            out += batcher.take_ready(event.complete_ns)
        batcher.add_event(event, event.complete_ns)
    return out + batcher.take_ready(0, everything=True)


def partition_batches(events: Iterable[IoEvent], settings: Settings, partitions: int,
                      tick_ns: int = TICK_NS) -> list[Outgoing]:
    """IoBatch2 records as the SDK makes them with these settings for a raw topic of
    ``partitions`` partitions, with the events' own time as its clock (no broker)."""
    batcher = PartitionBatcher(
        "bench", min(settings.batch_max_events, settings.max_events_per_record),
        settings.batch_max_age_ms * NS_PER_MS, record_bytes_bound(settings.max_record_bytes),
        partitions)
    out: list[Outgoing] = []
    for event, tick_due in event_clock(events, tick_ns):
        if tick_due:
            out += batcher.take_ready(event.complete_ns)
        if batcher.add_event(event):
            out += batcher.take_ready(event.complete_ns)
    return out + batcher.take_ready(0, everything=True)


def encoded_records(records: Sequence[dict[str, Any]],
                    schemas: SchemaSet | None = None) -> list[tuple[bytes, bytes]]:
    """(Kafka key = volume id, IoBatch payload) per record."""
    schemas = schemas or default_schemas()
    return [(r["volume_id"].encode(), schemas.encode("IoBatch", r)) for r in records]


class BacklogProducer(IoProducer):
    """The producer SDK with the events' own time as its clock: a backlog produced in a
    few seconds has the batches a live fleet would have made in real time."""

    async def _tick(self) -> None:  # no wall-clock ticker: send_backlog drives batching
        return None

    async def send_backlog(self, events: Iterable[IoEvent], tick_ns: int = TICK_NS) -> None:
        batcher = self.batcher
        for event, tick_due in event_clock(events, tick_ns):
            if tick_due or len(batcher.rows) >= batcher.max_events:
                await self._take_and_send(event.complete_ns)
            self._now_ns = event.complete_ns
            self.record_event(event)
        await self.flush()


def plain_avro_events(out: Outgoing) -> list[dict[str, Any]]:
    """An IoBatch2 record's events (several volumes) as the plain layout's event records."""
    batch = raw_batch("IoBatch2", out.record)
    cols = batch.columns
    refs = list(zip(cols.volumes, cols.tenants, strict=True))
    return [
        {"volume_id": refs[v][0], "tenant_id": refs[v][1],
         "host_id": batch.host_id, "op": OPS[op], "status": STATUSES[status],
         "offset": offset, "bytes": nbytes, "submit_ns": submit, "complete_ns": done}
        for v, op, status, offset, nbytes, submit, done in zip(
            cols.volume.tolist(), cols.op.tolist(), cols.status.tolist(),
            batch.offset.tolist(), cols.nbytes.tolist(), cols.submit_ns.tolist(),
            cols.complete_ns.tolist(), strict=True)
    ]


class PlainAvroProducer(BacklogProducer):
    """The same batches, each sent as a plain Avro array of event records (anchor b)."""

    async def _send(self, records: list[Outgoing]) -> None:
        for out in records:
            events = plain_avro_events(out)
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, PLAIN_EVENT_SCHEMA, events)
            future = await self._kafka.send(self.topic, value=buf.getvalue(), key=out.key)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
            self.records_sent += 1
            self.events_sent += len(events)


async def register_events(settings: Settings, events: Iterable[IoEvent]) -> None:
    """Each volume of ``events`` registered to its tenant (the worker counts no other)."""
    await register_volumes(settings, dict.fromkeys((e.volume_id, e.tenant_id) for e in events))


async def produce_backlog(settings: Settings, events: Sequence[IoEvent],
                          cls: type[BacklogProducer] = BacklogProducer) -> tuple[int, int]:
    """Send events through the SDK (virtual clock); returns (records, events) sent. For
    the worker (the SDK's layout), their volumes are registered first, untimed."""
    if cls is BacklogProducer:
        await register_events(settings, events)
    producer = cls(settings)
    await producer.start()
    try:
        await producer.send_backlog(events)
    finally:
        await producer.close()
    return producer.records_sent, producer.events_sent
