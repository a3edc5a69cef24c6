"""A table's changelog messages sent as Kafka record batches, not one faust send per write.

faust sends each table write's changelog message on its own: a future through its
producer buffer, which hands them to aiokafka one at a time, and which stalls the agents'
streams whenever more than 100 wait (docs/performance.md, session 12: about 7 changelog
messages per raw record, the worker idle a third of the time behind that buffer). A
stage's unit knows all of its writes at once (state/journal.py ``write_all``), and a step
knows its counters: :meth:`ChangelogBatches.write` puts them in the partition's RocksDB
database at once, as faust's store does, and queues them; :meth:`ChangelogBatches.send`
hands each write's messages to aiokafka in record batches of up to ``batch_bytes``. The
messages are those faust would send (the same key, value, partition and order), so
recovery, standbys and compaction see no difference.

What faust's own path does, this does too:

* the partition's persisted offset (where faust's recovery of the partition starts) is
  set once a batch is acknowledged, to its last offset (aiokafka has one batch of a
  partition in flight at a time: they are acknowledged in order);
* the send ledger (checkpoints.py) is issued when the values are written, before a
  checkpoint can hold them, and done once every batch of the write is acknowledged;
* a write call that fits in one record batch goes in one (:meth:`ChangelogBatches.
  lands_whole`): the log appends a batch all or none, so a journaled table needs no copy
  of such a unit's writes (state/journal.py);
* faust's commit flushes aiokafka's producer, which waits for these batches too: an agent
  awaits :meth:`ChangelogBatches.send` after each unit, before its step returns and its
  records are acknowledged.

Order: the write calls are sent one at a time, in the order they were made (a lock: a
send waiting for aiokafka to take a batch holds the others back), each call's batches
in order, and aiokafka keeps a partition's batches in order. Two agents' units may
interleave in a changelog partition: they are different stages, with keys of their own
and a journal each.

A batch Kafka does not acknowledge is logged as an error and counted (``failed``); the
write calls after it can no longer make a checkpoint valid (the ledger's ``failed``),
as with faust's own path.

Only with RocksDB and ``at_least_once``: the memory store keeps no persisted offsets, and
``exactly_once`` sends through a transactional producer per partition; those keep faust's
path (:func:`batched_changelogs`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

from streams.config import Settings
from streams.kafka.topics import CHANGELOG_MAX_MESSAGE_BYTES
from streams.pipeline.checkpoints import SendLedger
from streams.pipeline.outputs import NO_HEADERS, send_in_batches
from streams.state.journal import Write

log = logging.getLogger(__name__)
# A batch of a changelog partition is one message to the broker's max.message.bytes (the
# changelog topics', topics.py); a larger single value (a journal chunk is at most 512 KiB)
# goes alone in its batch.
BATCH_BYTES = CHANGELOG_MAX_MESSAGE_BYTES // 2
# aiokafka's record batch (v2): a 61-byte header, and per record at most 32 bytes besides
# its key and value (attributes, varints of the timestamp and offset deltas, of the key's
# and value's lengths and of the header count, and of the record's own length).
BATCH_HEADER_BYTES = 61
RECORD_OVERHEAD_BYTES = 32


def batched_changelogs(settings: Settings) -> bool:
    """Whether the worker's tables send their changelogs in batches (module doc)."""
    return settings.table_store == "rocksdb" and settings.processing_guarantee == "at_least_once"


class ChangelogBatches:
    """The changelog writes of one faust table (RocksDB store), queued per write call and
    sent as record batches (module doc)."""

    def __init__(self, table: Any, producer_of: Callable[[], Any],
                 ledger: SendLedger | None = None, batch_bytes: int = BATCH_BYTES) -> None:
        self.store = table.data
        self.topic = table.changelog_topic.get_topic_name()
        self.producer_of = producer_of  # aiokafka's producer, once faust started it
        self.ledger = ledger
        self.batch_bytes = batch_bytes
        self.queued: list[tuple[int, list[Write], int]] = []  # (partition, writes, ledger seq)
        self.sending = asyncio.Lock()
        self.batches = 0  # record batches sent
        self.failed = 0  # batches Kafka did not acknowledge

    def lands_whole(self, writes: Iterable[Write]) -> bool:
        """Whether :meth:`write` of ``writes`` goes out as one record batch, which the
        log appends all or none (state/journal.py needs no copy of them then): their size
        as aiokafka counts it at the most (a record's overhead is at most
        :data:`RECORD_OVERHEAD_BYTES`) within ``batch_bytes``. Reads only as many writes
        as fit: a catching-up unit's thousands cost no more than one batch's."""
        room = self.batch_bytes - BATCH_HEADER_BYTES
        for key, value in writes:
            room -= RECORD_OVERHEAD_BYTES + len(key) + (0 if value is None else len(value))
            if room < 0:
                break
        return room >= 0

    def write(self, partition: int, writes: list[Write]) -> None:
        """``writes`` into the partition's database now, their changelog messages queued."""
        if not writes:
            return
        db = self.store._db_for_partition(partition)
        index = self.store._key_index  # faust's key -> partition cache for reads off-stream
        seq = 0 if self.ledger is None else self.ledger.issue()
        # One RocksDB write of them all (one write-ahead log record, applied in order):
        # half the cost of a put each (~2 against ~4 µs a value)
        batch = WriteBatch(raw_mode=True)
        for key, value in writes:
            if value is None:
                batch.delete(key)
                index.pop(key, None)
            else:
                batch.put(key, value)
                index[key] = partition
        db.write(batch)
        self.queued.append((partition, writes, seq))

    async def send(self) -> None:
        """Hand every queued write's messages to the producer, in order, as record batches.
        Returns once they are in aiokafka's accumulator (acknowledged later)."""
        async with self.sending:
            while self.queued:
                await self._send_one(*self.queued.pop(0))

    async def _send_one(self, partition: int, writes: list[Write], seq: int) -> None:
        """One write call's messages, in batches of up to ``batch_bytes``."""
        futures = await send_in_batches(self.producer_of(), self.topic, partition,
                                        ((key, value, NO_HEADERS) for key, value in writes),
                                        self.batch_bytes)
        if len(futures) > 1 and self.lands_whole(writes):  # lands_whole's bound is wrong
            log.error("a write call of %d message(s) to %s[%d] said to land whole took %d "
                      "record batches", len(writes), self.topic, partition, len(futures))
        self.batches += len(futures)
        self._watch(partition, [(fut, count) for fut, count, _ in futures], seq)

    def _watch(self, partition: int, futures: list[tuple[asyncio.Future[Any], int]],
               seq: int) -> None:
        """When each batch is acknowledged: the persisted offset; when all are, the ledger."""
        waiting = len(futures)
        landed = True

        def done(fut: asyncio.Future[Any], *, count: int) -> None:
            nonlocal waiting, landed
            waiting -= 1
            if fut.cancelled() or fut.exception() is not None:
                landed = False
                self.failed += 1
                log.error("changelog batch of %d message(s) to %s[%d] not acknowledged: %s; "
                          "no table checkpoint is made valid from now on", count,
                          self.topic, partition, "cancelled" if fut.cancelled()
                          else repr(fut.exception()))
            elif fut.result() is not None:  # None: acks=0, no offset known
                self.store.set_persisted_offset(TP(self.topic, partition),
                                                fut.result().offset + count - 1)
            if waiting == 0 and self.ledger is not None and seq:
                self.ledger.done(seq, landed)

        for fut, count in futures:
            fut.add_done_callback(functools.partial(done, count=count))
