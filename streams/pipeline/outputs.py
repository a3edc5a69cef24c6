"""The agents' records (window, billing and monitoring records, watermark markers) sent as
Kafka record batches, not one faust send per record.

faust sends each record on its own: a future through its producer buffer, a topic and
producer lookup, aiokafka's accumulator and a delivery callback, some 30-50 µs a record
on the worker's one core. A unit of the accounting agent publishes a record per window it
closes or revises: at 100,000 volumes about one per ten events, where that path was a
tenth of the worker's time, the changelogs' the same before they were batched
(changelogs.py). Here a publish queues its records per (topic, partition), in order, and
:meth:`OutputBatches.send` hands each partition's records to aiokafka in record batches
of up to ``batch_bytes`` (:func:`send_in_batches`, the changelogs' too). The records are
those faust would send (key, value, headers, partition, order within a partition), so
readers see no difference.

Delivery is what the commit relies on: faust's commit flushes aiokafka's producer, which
waits for these batches as for its own, so an input offset is committed only once what
processing it published is in Kafka. A batch Kafka does not acknowledge (aiokafka gave up
retrying: the producer's request timeout, faust's 20 minutes, passed, or the broker
refused it) exits the worker at once, before anything can commit past it: the restarted
worker sends those records again from its tables (``replay_outputs``). faust's own path
would have logged the error and let the commit go on, the records lost.

Only with ``at_least_once``: ``exactly_once`` sends through a transactional producer per
partition, which keeps faust's path (:func:`batched_outputs`), as the changelogs do.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from streams.config import Settings
from streams.kafka.topics import CHANGELOG_MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)
# A record batch is one message to the broker's max.message.bytes (1 MiB for the stats,
# billing and monitoring topics, as for the changelogs): half of it, as changelogs.py.
BATCH_BYTES = CHANGELOG_MAX_MESSAGE_BYTES // 2
IN_FLIGHT_BYTES = 4 << 20  # records handed to the producer and not acknowledged yet, at most
EXIT_OUTPUT_LOST = 70  # EX_SOFTWARE, as an agent that fails (batches.py)
Headers = list[tuple[str, bytes]]  # a list: aiokafka's record builder takes no other
Message = tuple["bytes | None", "bytes | None", Headers]  # key, value, headers
NO_HEADERS: Headers = []  # shared, never changed (aiokafka only reads it)


def batched_outputs(settings: Settings) -> bool:
    """Whether the agents publish in record batches (module doc)."""
    return settings.processing_guarantee == "at_least_once"


Sent = tuple["asyncio.Future[Any]", int, int]  # a batch's delivery, messages, bytes


async def send_in_batches(producer: Any, topic: str, partition: int,
                          messages: Iterable[Message], batch_bytes: int) -> list[Sent]:
    """``messages`` into ``topic[partition]`` as record batches of up to ``batch_bytes``
    (a larger message goes alone in its batch), compressed as the producer's own, in
    order; returns each batch's delivery future, its number of messages and its size.
    Returns once aiokafka holds them (delivered later, a partition's batches in order)."""
    compression = producer._message_accumulator._compression_type
    sent: list[Sent] = []

    async def send(batch: BatchBuilder, count: int) -> None:
        size = batch.size()
        sent.append((await producer.send_batch(batch, topic, partition=partition), count,
                     size))

    batch, count = BatchBuilder(batch_bytes, compression), 0
    for key, value, headers in messages:
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            await send(batch, count)
            batch, count = BatchBuilder(batch_bytes, compression), 0
            # an empty batch takes any one message
            batch.append(key=key, value=value, timestamp=None, headers=headers)
        count += 1
    if count:
        await send(batch, count)
    return sent


class OutputBatches:
    """Records queued per (topic, partition) and sent as record batches (module doc)."""

    def __init__(self, producer_of: Callable[[], Any], batch_bytes: int = BATCH_BYTES,
                 on_lost: Callable[[], None] | None = None,
                 in_flight_bytes: int = IN_FLIGHT_BYTES) -> None:
        self.producer_of = producer_of  # aiokafka's producer, once faust started it
        self.batch_bytes = batch_bytes
        self.in_flight_bytes = in_flight_bytes
        self.in_flight: deque[tuple[asyncio.Future[Any], int]] = deque()  # (delivery, bytes)
        self.in_flight_total = 0
        self.queued: dict[tuple[str, int], list[Message]] = {}
        self.sending = asyncio.Lock()
        self.batches = 0  # record batches sent
        self.records = 0  # records in them
        self.on_lost = on_lost or _exit_output_lost

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
            headers: Headers | None = None) -> None:
        """Queue a record; :meth:`send` hands it to the producer."""
        self.add_many(topic, partition, [(key, value, NO_HEADERS if headers is None else headers)])

    def add_many(self, topic: str, partition: int, messages: list[Message]) -> None:
        """Queue records, in order."""
        queued = self.queued.get((topic, partition))
        if queued is None:
            self.queued[(topic, partition)] = list(messages)
        else:
            queued += messages

    async def send(self) -> None:
        """Hand every queued record to the producer, each partition's in order, as record
        batches; returns once they are in aiokafka's accumulator."""
        async with self.sending:
            while self.queued:
                (topic, partition), messages = next(iter(self.queued.items()))
                del self.queued[(topic, partition)]
                await self._room()
                sent = await send_in_batches(self.producer_of(), topic, partition, messages,
                                             self.batch_bytes)
                self.batches += len(sent)
                self.records += len(messages)
                for fut, count, size in sent:
                    fut.add_done_callback(self._watch(topic, partition, count))
                    self.in_flight.append((fut, size))
                    self.in_flight_total += size

    async def _room(self) -> None:
        """Wait while more than ``in_flight_bytes`` of batches are not acknowledged yet
        (oldest first): a unit that closes 100,000 windows does not hold all of their
        records in the producer at once (faust's path had its buffer of 100 sends)."""
        in_flight = self.in_flight
        while in_flight and (in_flight[0][0].done()
                             or self.in_flight_total > self.in_flight_bytes):
            fut, size = in_flight.popleft()
            self.in_flight_total -= size
            if not fut.done():
                await asyncio.wait([fut])

    def _watch(self, topic: str, partition: int, count: int
               ) -> Callable[[asyncio.Future[Any]], None]:
        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                log.error("a batch of %d record(s) to %s[%d] was not acknowledged (%s): "
                          "exiting without commit; the restarted worker sends them again",
                          count, topic, partition,
                          "cancelled" if fut.cancelled() else repr(fut.exception()))
                self.on_lost()
        return done


def _exit_output_lost() -> None:
    logging.shutdown()
    os._exit(EXIT_OUTPUT_LOST)
