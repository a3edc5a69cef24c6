"""The producer SDK: what a hypervisor host links to report I/O completions.

``record()`` only buffers (see batching.py); a background task ships each
volume's batch to ``ioacct.io.raw`` (key = volume_id) when it is full or
``batch_max_age_ms`` old, through an idempotent aiokafka producer with
acks=all. ``close()`` flushes everything.

    async with IoProducer(settings) as producer:
        producer.record("vol-1", "tenant-1", "read", "ok", 0, 4096, t0, t1)
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from .batching import Batcher
from .codec import SchemaSet, default_schemas
from .config import Settings
from .events import IoEvent


def new_producer_id() -> str:
    """A producer id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class IoProducer:
    """Buffers raw events per volume and sends them as IoBatch records."""

    def __init__(
        self, settings: Settings, producer_id: str | None = None,
        schemas: SchemaSet | None = None, topic: str | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.raw_topic
        self.schemas = schemas or default_schemas()
        self.batcher = Batcher(
            producer_id or new_producer_id(), settings.batch_max_events,
            settings.batch_max_age_ms * 1_000_000,
        )
        self.records_sent = 0
        self.events_sent = 0
        self._kafka = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, enable_idempotence=True,
            acks="all", linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20,
        )
        self._now_ns = time.monotonic_ns()
        self._wakeup = asyncio.Event()
        self._pending: set[asyncio.Future[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def producer_id(self) -> str:
        return self.batcher.producer_id

    async def start(self) -> None:
        await self._kafka.start()
        self._ticker = asyncio.create_task(self._tick(), name="ioacct-producer-ticker")

    async def __aenter__(self) -> IoProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def record(
        self, volume_id: str, tenant_id: str, op: str, status: str, offset: int,
        nbytes: int, submit_ns: int, complete_ns: int, host_id: str | None = None,
    ) -> None:
        """Buffer one I/O completion; never blocks, never talks to Kafka."""
        if self.batcher.add(volume_id, tenant_id, op, status, offset, nbytes,
                            submit_ns, complete_ns, host_id, self._now_ns):
            self._wakeup.set()

    def record_event(self, event: IoEvent) -> None:
        self.record(event.volume_id, event.tenant_id, event.op, event.status, event.offset,
                    event.bytes, event.submit_ns, event.complete_ns, event.host_id)

    async def dead_letter(self, reason: str, source: str, position: int, payload: bytes) -> None:
        """Send input that cannot be encoded (bad JSON, unknown op) to the dead-letter topic."""
        record = {
            "reason": reason, "source_topic": source, "source_partition": -1,
            "source_offset": position, "rejected_at_ns": time.time_ns(), "events": 1,
            "payload": payload,
        }
        value = self.schemas.encode("DeadLetter", record)
        future = await self._kafka.send(self.settings.dlq_topic, value=value)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _tick(self) -> None:
        interval_s = max(0.005, self.settings.batch_max_age_ms / 4000)
        while not self._closing:
            try:
                await asyncio.wait_for(self._wakeup.wait(), interval_s)
            except TimeoutError:
                pass
            self._wakeup.clear()
            self._now_ns = time.monotonic_ns()
            await self._send(self.batcher.take_ready(self._now_ns))

    async def _send(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            value = self.schemas.encode("IoBatch", record)
            future = await self._kafka.send(
                self.topic, value=value, key=record["volume_id"].encode()
            )
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
            self.records_sent += 1
            self.events_sent += len(record["op"])

    async def flush(self) -> None:
        """Send every buffered event and wait until Kafka has acknowledged it."""
        self._now_ns = time.monotonic_ns()
        await self._send(self.batcher.take_ready(self._now_ns, everything=True))
        if self._pending:
            await asyncio.gather(*list(self._pending))

    async def close(self) -> None:
        """Flush everything, then stop; a second call does nothing."""
        if self._ticker is None:
            return
        # Let the ticker finish the batch it is sending: cancelling it mid-send
        # could drop a batch that already has its seq.
        self._closing = True
        self._wakeup.set()
        await self._ticker
        self._ticker = None
        try:
            await self.flush()
        finally:
            await self._kafka.stop()
