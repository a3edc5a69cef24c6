"""Fixes for faust-streaming behaviour that would lose counts; applied by :func:`apply`.

* :func:`_flush`: faust's producer flush returns while changelog writes still wait in its
  buffer, so a commit could overtake them; this one drains the buffer for real.
* :func:`ack_offsets`: offsets the guard read directly are acknowledged, else faust never
  commits past a gap at a partition's head.
* :func:`_add_gap`: faust's own gap bookkeeping is off; it acknowledged those offsets a
  second time and crawled the commit one offset per interval.
* :func:`_create_worker_consumer`: faust builds its consumer with a fetch wait of 1.5 s,
  and aiokafka keeps one fetch in flight per broker: a fetch sent for the partitions
  with nothing new (those with records still waiting in the worker are left out of it)
  waits that long on the broker, and records arriving meanwhile on the others wait with
  it. The raw records of a live fleet reached the accounting agent in bursts 1-1.5 s
  apart (docs/performance.md, session 18); the fetch waits at most
  :data:`FETCH_MAX_WAIT_MS` here.

How each was found: docs/chaos.md and the commit history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

from streams.pipeline.guard.offsets import CommitWatch

_original_send_pending = ProducerBuffer._send_pending
_original_flush = ProducerBuffer.flush
_original_add_gap = Consumer._add_gap
_original_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
# How long the broker may hold a fetch that finds nothing new (aiokafka's default 500 ms,
# faust's 1,500): an idle partition's empty answer costs a request per this interval.
FETCH_MAX_WAIT_MS = 100


async def _send_pending(self: Any, fut: Any) -> None:
    # No await between the buffer's queue.get() and this line, so a message is
    # always either counted in ``size`` or in flight here.
    self._ioacct_in_flight = getattr(self, "_ioacct_in_flight", 0) + 1
    try:
        await _original_send_pending(self, fut)
    finally:
        self._ioacct_in_flight -= 1


async def _flush(self: Any) -> None:
    while self.size or getattr(self, "_ioacct_in_flight", 0):
        if self.size:
            await self.flush_atmost(None)
        else:
            await asyncio.sleep(0.005)  # the last message is being handed to the client


async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Nothing: ioacct acknowledges the offsets faust skipped itself (ack_offsets)."""


def ack_offsets(consumer: Any, tp: Any, offsets: Iterable[int]) -> None:
    """Mark ``offsets`` of ``tp`` acknowledged in faust's consumer, as its ``ack()`` does
    for a delivered message: offsets faust itself never delivered, whose records (if
    any: a compacted topic has holes) were read and processed."""
    committed = consumer._committed_offset[tp]
    acked_index, acked = consumer._acked_index[tp], consumer._acked[tp]
    for offset in offsets:
        if (committed is None or offset >= committed) and offset not in acked_index:
            acked_index.add(offset)
            acked.append(offset)


def held_commits(consumer: Any, next_offsets: dict[str, dict[int, int]],
                 watch: CommitWatch, now: float) -> list[str]:
    """A line for each partition of the topics of ``next_offsets`` assigned to faust's
    ``consumer`` whose commit ``watch`` finds held, with what faust holds for it (its
    bookkeeping, as ``Consumer._new_offset`` reads it) and the next offset ioacct expects
    there (``next_offsets[topic][partition]``)."""
    assigned = {tp for tp in consumer.assignment() if tp.topic in next_offsets}
    watch.forget_except(assigned)
    lines = []
    for tp in sorted(assigned):
        committed = consumer._committed_offset.get(tp)
        acked = consumer._acked.get(tp) or []
        held_s = watch.observe(tp, committed, len(acked), now)
        if held_s is not None:
            lines.append(
                f"{tp.topic}[{tp.partition}]: commit held at {committed} for {held_s:.0f} s "
                f"while {len(acked)} processed record(s) wait past it (offsets "
                f"{min(acked)}..{max(acked)}, {len(set(acked))} distinct); next offset "
                f"by ioacct {next_offsets[tp.topic].get(tp.partition)}")
    return lines


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original_create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its fetcher at start()
    return consumer


def apply() -> None:
    """Idempotent; called by build_app before any worker starts."""
    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = _flush  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer = (  # type: ignore[method-assign]
        _create_worker_consumer)
