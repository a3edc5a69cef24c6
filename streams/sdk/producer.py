"""The producer SDK: what a hypervisor host links to report I/O completions.

``record()`` only buffers (one tuple appended: see grouping.py); a background task takes
every buffered event when ``batch_max_events`` are buffered or the oldest is
``batch_max_age_ms`` old and makes one IoBatch2 record (raw layout 2) per partition of
``ioacct.io.raw``, holding the events of every volume Kafka's default partitioner places
there (key = the record's first volume id; the partition count comes from the topic's
metadata when the producer connects). With the spool (the default, docs/producer.md)
every record is appended to a local disk spool (spool.py) and a drain task sends the
spool to Kafka in order, through an idempotent aiokafka producer with acks=all, removing
what Kafka acknowledged. While Kafka is unreachable the spool grows and the drain retries
with backoff; ``close()`` waits for Kafka, then leaves what is left on disk for the next
producer on that spool.

    async with IoProducer(settings) as producer:
        producer.record("vol-1", "tenant-1", "read", "ok", 0, 4096, t0, t1)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.config import Settings
from streams.core.codec import SchemaSet, default_schemas
from streams.core.events import OP_CODE, STATUS_CODE, IoEvent
from streams.core.ingest import MAX_REASON_CHARS, bounded_payload, clip_text
from streams.kafka.security import client_kwargs
from streams.sdk.drain_log import DrainLog, SpoolStats
from streams.sdk.grouping import Outgoing, PartitionBatcher, record_bytes_bound
from streams.sdk.kafka_client import acknowledged, describe, partition_count, stop_kafka
from streams.sdk.quarantine import Quarantine, refused_for_good, send_alone
from streams.sdk.spool import Spool, SpoolEntry, SpoolError, SpoolFull, open_free_slot

log = logging.getLogger(__name__)

READ_MAX_ENTRIES = 512  # spool entries the drain takes at a time
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 2.0  # the drain's retry delay while Kafka is away
START_WAIT_S = 5.0  # start() tries Kafka this long; the drain keeps trying after
METADATA_WAIT_S = 5.0  # how long a new session waits for the raw topic's partition count
SPOOL_SLOTS = 64  # default spool in use: <dir>.1, <dir>.2, ... (several producers)


def new_producer_id() -> str:
    """A producer id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class IoProducer:
    """Buffers raw events and sends them as IoBatch2 records, one per partition per flush.

    ``spool_dir``: None follows the settings (``spool``, ``spool_dir``; by default
    ``<state_dir>/spool/<topic_prefix>``), a path spools there, False sends directly
    (no spool: an unreachable Kafka then makes ``start()`` or ``flush()`` raise).
    """

    def __init__(
        self, settings: Settings, producer_id: str | None = None,
        schemas: SchemaSet | None = None, topic: str | None = None,
        spool_dir: Path | Literal[False] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.raw_topic
        self.schemas = schemas or default_schemas()
        self.batcher = PartitionBatcher(
            producer_id or new_producer_id(),
            min(settings.batch_max_events, settings.max_events_per_record),
            settings.batch_max_age_ms * 1_000_000, record_bytes_bound(settings.max_record_bytes),
        )
        self._rows = self.batcher.rows  # record() appends here: one list for its life
        self._max_events = self.batcher.max_events
        self.records_sent = 0
        self.events_sent = 0
        self.spool: Spool | None = None
        self.quarantine: Quarantine | None = None  # beside the spool
        self._suspect: tuple[int, int] | None = None  # see _send_alone_up_to
        self._spool_dir = spool_dir
        self._kafka = self._new_kafka()
        self._kafka_started = False
        self._count_partitions = False  # a new session asks the topic's partition count
        self._now_ns = time.monotonic_ns()
        self._wakeup = asyncio.Event()
        self._taking = asyncio.Lock()
        self._spooled = asyncio.Event()
        self._pending: set[asyncio.Future[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._closing = False
        self._input_done = False  # close() has spooled the last batches: the drain may end
        self.drain_log = DrainLog(settings.bootstrap_servers)
        self._last_ack_at = 0.0
        self._last_sync_at = 0.0

    @property
    def producer_id(self) -> str:
        return self.batcher.producer_id

    def _wants_spool(self) -> bool:
        return isinstance(self._spool_dir, Path) or (
            self._spool_dir is None and self.settings.spool)

    def _new_kafka(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_kwargs(self.settings), enable_idempotence=True,
            # No larger than the raw topic takes (its max.message.bytes, kafka/topics.py):
            # a batch the broker refuses would fail every record in it.
            acks="all", max_batch_size=min(1 << 20, self.settings.max_record_bytes),
            max_request_size=self.settings.max_record_bytes,
            # The drain hands Kafka whole groups of records at once: no need to linger.
            linger_ms=0 if self._wants_spool() else 5, request_timeout_ms=15_000,
        )

    async def start(self) -> None:
        if not self._wants_spool():
            await self._connect()
            await self._learn_partitions()
        else:
            try:
                self.spool = self._open_spool()
            except SpoolError:
                await self._kafka.stop()  # never started: only closes the client object
                raise
            self.quarantine = Quarantine(self.spool.directory)
            self.drain_log.on_recovered(self.spool, time.monotonic())
            try:  # fail fast when Kafka is there; the drain keeps trying when it is not
                await asyncio.wait_for(self._connect(), START_WAIT_S)
            except (KafkaError, OSError, TimeoutError) as exc:
                self._on_outage(exc)
            await self._learn_partitions()
            self._last_sync_at = time.monotonic()
            self._drainer = asyncio.create_task(self._drain(), name="ioacct-producer-drain")
            self._drainer.add_done_callback(_drain_ended)
        self._ticker = asyncio.create_task(self._tick(), name="ioacct-producer-ticker")

    def _open_spool(self) -> Spool:
        max_bytes = self.settings.spool_max_bytes
        if isinstance(self._spool_dir, Path) or self.settings.spool_dir:
            return Spool(Path(self._spool_dir or self.settings.spool_dir), max_bytes)
        return open_free_slot(self.settings.spool_path(), max_bytes, SPOOL_SLOTS)

    async def __aenter__(self) -> IoProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def record(
        self, volume_id: str, tenant_id: str, op: str, status: str, offset: int,
        nbytes: int, submit_ns: int, complete_ns: int, host_id: str | None = None,
    ) -> None:
        """Buffer one I/O completion; never blocks, never touches Kafka or the disk. An
        unknown op or status raises ValueError (route such input to dead_letter()); an
        offset, size or time that is no 64-bit integer is dead-lettered when it is sent."""
        # grouping.event_row and PartitionBatcher.add, inlined: this is bench (d)'s cost
        try:
            row = (volume_id, tenant_id, OP_CODE[op], STATUS_CODE[status], offset, nbytes,
                   submit_ns, complete_ns, host_id)
        except KeyError as exc:
            raise ValueError(f"unknown op or status {exc.args[0]!r}") from None
        rows = self._rows
        rows.append(row)
        if len(rows) == self._max_events:  # once: the ticker then takes every row
            self._wakeup.set()

    def record_event(self, event: IoEvent) -> None:
        self.record(event.volume_id, event.tenant_id, event.op, event.status, event.offset,
                    event.bytes, event.submit_ns, event.complete_ns, event.host_id)

    async def dead_letter(self, reason: str, source: str, position: int, payload: bytes) -> None:
        """Send input that cannot be encoded (bad JSON, unknown op) to the dead-letter topic."""
        record = {
            "reason": clip_text(reason, MAX_REASON_CHARS), "source_topic": source,
            "source_partition": -1,
            "source_offset": position, "rejected_at_ns": time.time_ns(), "events": 1,
            **bounded_payload(payload),  # a prefix, its length and hash: never too large
        }
        value = self.schemas.encode("DeadLetter", record)
        if self.spool is not None:
            self._append(self.settings.dlq_topic, None, value, 1)
            self._spooled.set()
            return
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
            await self._take_and_send(self._now_ns)

    async def _take_and_send(self, now_ns: int, everything: bool = False) -> None:
        """Take what is ready and send it, one taker at a time: seqs are stamped when
        taken, so records must leave in that order (the ticker and flush() both take; a
        later seq of a partition landing first would make the earlier one a replay)."""
        async with self._taking:
            await self._send(self.batcher.take_ready(now_ns, everything))

    async def _send(self, records: list[Outgoing]) -> None:
        for out in records:
            value = self.schemas.encode("IoBatch2", out.record)
            self.records_sent += 1
            self.events_sent += out.events
            if self.spool is not None:
                self._append(self.topic, out.key, value, out.events)
                continue
            future = await self._kafka.send(self.topic, value=value, key=out.key)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
        if records and self.spool is not None:
            self._spooled.set()
        await self._dead_letter_rejected()

    async def _dead_letter_rejected(self) -> None:
        """Events no record can carry (an offset that is no 64-bit integer, a volume id
        that is no string): each to the dead-letter topic with its reason, never dropped."""
        rejected, self.batcher.rejected = self.batcher.rejected, []
        for bad in rejected:
            log.error("an event no raw record can carry goes to the dead-letter topic: %s",
                      bad.reason)
            await self.dead_letter(bad.reason, "sdk.record", -1, repr(bad.row).encode())

    def _append(self, topic: str, key: bytes | None, value: bytes, events: int) -> None:
        assert self.spool is not None
        try:
            self.spool.append(topic, key, value)
        except SpoolFull as exc:
            self.drain_log.on_refused(exc, events, time.monotonic())
            return
        self.drain_log.on_spooled()

    # -- the drain: the spool to Kafka, in order ----------------------------------------

    async def _drain(self) -> None:
        assert self.spool is not None
        backoff_s = BACKOFF_MIN_S
        while True:
            entries = self.spool.read(READ_MAX_ENTRIES)
            if not entries:
                self._on_empty()
                if self._input_done:  # not merely _closing: close() still spools the rest
                    return
                self._spooled.clear()
                try:
                    await asyncio.wait_for(self._spooled.wait(),
                                           self.settings.spool_ack_interval_s)
                except TimeoutError:
                    pass
                continue
            try:
                await self._connect()
                await self._learn_partitions()
                await self._send_in_order(await self._send_alone_up_to(entries))
                backoff_s = BACKOFF_MIN_S
            except (KafkaError, OSError, TimeoutError) as exc:
                self.spool.rewind()
                last = (entries[-1].segment_id, entries[-1].offset)
                if refused_for_good(exc) and (self._suspect or (0, 0)) < last:
                    self._suspect = last  # not an outage: find the entry, sending alone
                    await self._reset_kafka()
                    continue
                self._on_outage(exc)
                self.spool.sync_data()  # records wait on disk now: let a host crash keep them
                await self._reset_kafka()
                await asyncio.sleep(backoff_s * random.uniform(0.5, 1.0))
                backoff_s = min(BACKOFF_MAX_S, backoff_s * 2)

    async def _send_in_order(self, entries: list[SpoolEntry]) -> None:
        """Send in spool order; acknowledge the entries in that order.

        Order matters: the worker skips a record whose seq is not above the highest
        applied for its (volume, producer), so had a later record of a volume landed
        while an earlier one was lost, resending the earlier one would not count it.
        Within one session of the idempotent producer that cannot happen: Kafka takes
        a partition's batches only in sequence, so after a batch fails none after it
        lands (aiokafka 0.14 never resets sequence numbers within a session). So a
        failure ends the session: the drain rewinds to the first unacknowledged entry
        and a new session resends from there; what had landed is a replay the worker
        skips. A send() that raises has not reached Kafka: nothing after it is sent."""
        outstanding: deque[tuple[SpoolEntry, asyncio.Future[Any]]] = deque()
        failed: list[BaseException] = []

        def note_failure(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is not None:
                failed.append(future.exception())  # type: ignore[arg-type]

        for entry in entries:
            if failed:
                raise failed[0]
            future = await self._kafka.send(entry.topic, value=entry.value, key=entry.key)
            future.add_done_callback(note_failure)
            outstanding.append((entry, future))
            self._ack_done(outstanding)
        while outstanding:
            await acknowledged(outstanding[0][1])
            self._ack_done(outstanding)

    async def _send_alone_up_to(self, entries: list[SpoolEntry]) -> list[SpoolEntry]:
        """After Kafka refused an entry for good, send each entry alone up to the last one
        of the refused session (the suspect): a refusal then names its entry, which goes
        to the quarantine (docs/producer.md, "Quarantine"). Returns the entries after it."""
        assert self.spool is not None and self.quarantine is not None
        for n, entry in enumerate(entries):
            if self._suspect is None or (entry.segment_id, entry.offset) > self._suspect:
                self._suspect = None
                return entries[n:]
            await self._connect()
            if (refusal := await send_alone(self._kafka, entry)) is not None:
                self.quarantine.add(entry, refusal)  # fsync'd before the entry leaves
                self.drain_log.on_quarantined()
            self.spool.ack(entry)
            if refusal is None:
                self._on_ack()
            self._ack_done(deque())  # persists the acknowledged position when it is time
            if refusal is not None:  # it left a gap in the session's sequence: a new one
                await self._reset_kafka()
        return []

    def _ack_done(self, outstanding: deque[tuple[SpoolEntry, asyncio.Future[Any]]]) -> None:
        assert self.spool is not None
        while outstanding and outstanding[0][1].done():
            entry, future = outstanding[0]
            future.result()  # a failed send raises here: the drain rewinds
            outstanding.popleft()
            self.spool.ack(entry)
            self._on_ack()
        now = time.monotonic()
        if now - self._last_sync_at >= self.settings.spool_ack_interval_s:
            self.spool.sync()
            self._last_sync_at = now

    def _on_ack(self) -> None:
        assert self.spool is not None
        self._last_ack_at = time.monotonic()
        self.drain_log.on_ack(self.spool, self._last_ack_at)

    def _on_outage(self, exc: BaseException) -> None:
        assert self.spool is not None
        self.drain_log.on_outage(self.spool, exc, time.monotonic())

    def _on_empty(self) -> None:
        assert self.spool is not None
        now = time.monotonic()
        self.drain_log.on_empty(now)
        if now - self._last_sync_at >= self.settings.spool_ack_interval_s:
            self.spool.sync()
            self._last_sync_at = now

    async def _connect(self) -> None:
        if self._kafka_started:
            return
        try:
            await self._kafka.start()
        except BaseException:
            await self._reset_kafka()  # a client that failed to start cannot start again
            raise
        self._kafka_started = True
        self._count_partitions = True

    async def _learn_partitions(self) -> None:
        """The raw topic's partition count, from its metadata, once per session (it may
        have grown). Until it is known every record holds one volume: right whatever it is."""
        if not (self._kafka_started and self._count_partitions):
            return
        self._count_partitions = False
        count = await partition_count(self._kafka, self.topic, METADATA_WAIT_S)
        if count is not None:
            self.batcher.partitions = count

    async def _reset_kafka(self) -> None:
        old, self._kafka = self._kafka, self._new_kafka()
        self._kafka_started = False
        self._count_partitions = False  # a new session asks the topic's partition count
        await stop_kafka(old, 1.0)

    # -- flushing and closing ------------------------------------------------------------

    @property
    def spool_stats(self) -> SpoolStats | None:
        if self.spool is None:
            return None
        return self.drain_log.stats(self.spool)

    @property
    def spool_left(self) -> int:
        """Records in the spool that Kafka has not acknowledged (0 without a spool)."""
        return self.spool.records if self.spool is not None else 0

    async def flush(self, wait_s: float | None = None) -> int:
        """Hand every buffered event on and wait until Kafka has acknowledged it; with
        the spool, give up after ``wait_s`` seconds without progress (None: never).
        Returns the records still waiting in the spool."""
        self._now_ns = time.monotonic_ns()
        await self._take_and_send(self._now_ns, everything=True)
        if self._pending:
            await asyncio.gather(*list(self._pending))
        if self.spool is None:
            return 0
        self._last_ack_at = time.monotonic()
        while self.spool.records and (self._drainer is None or not self._drainer.done()):
            if wait_s is not None and time.monotonic() - self._last_ack_at >= wait_s:
                break
            await asyncio.sleep(0.02)
        return self.spool.records

    async def close(self) -> int:
        """Flush, wait for Kafka (``spool_close_wait_s`` without progress at most), then
        stop; returns the records left in the spool. A second call does nothing."""
        if self._ticker is None:
            return self.spool_left
        # Let the ticker finish the batch it is sending: cancelling it mid-send
        # could drop a batch that already has its seq.
        self._closing = True
        self._wakeup.set()
        await self._ticker
        self._ticker = None
        try:
            await self._take_and_send(time.monotonic_ns(), everything=True)
            self._input_done = True
            self._spooled.set()
            if (self.spool is not None and self.spool.records
                    and self.drain_log.outage_since is not None):
                log.warning("Kafka is unreachable: waiting for it up to %g s to send the %d "
                            "record(s) of the spool %s", self.settings.spool_close_wait_s,
                            self.spool.records, self.spool.directory)
            await self.flush(self.settings.spool_close_wait_s)
        finally:
            await self._stop_drain()
        return self.spool_left

    async def _stop_drain(self) -> None:
        try:
            if self._drainer is not None:
                self._drainer.cancel()
                try:
                    await self._drainer  # a SpoolError it died of is raised here
                except asyncio.CancelledError:
                    pass
            await stop_kafka(self._kafka, 5.0)
        finally:
            if self.spool is not None:
                if self.spool.records:
                    log.warning("Kafka did not acknowledge %d record(s) (%d bytes): they stay "
                                "in the spool %s, and the next producer started on it sends "
                                "them first", self.spool.records, self.spool.pending_bytes,
                                self.spool.directory)
                self.spool.close()


def _drain_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("the spool's drain died (%s): nothing more is sent to Kafka; close() "
                  "raises it", describe(exc), exc_info=exc)
