"""Fixes for faust-streaming behaviour that would lose counts; applied by :func:`apply`.

Faust commits a source offset only after ``producer.flush()``, so that the table
changelog holds every update made for the records below that offset. But the
changelog writes of a table wait in faust's ``ProducerBuffer`` first, and its
``flush()`` (``flush_atmost(None)``) returns as soon as no message left the buffer
for 0.1 s. On a busy worker that happens, and the commit overtakes changelog writes
still in the buffer. After a rebalance the next owner restores the table from the
changelog without them and resumes after the committed offset: those records are
counted nowhere. Seen here as the first second of a simulated fleet missing from one
volume's counters after a rebalance during a 100,000-event run on a loaded machine.

The fix drains the buffer for real: until it is empty and the message being handed to
the Kafka client is handed over (the aiokafka flush that follows in faust waits for
delivery). A broker that is down makes the commit wait, which is what it should do.

Second: faust commits a partition only up to its first gap in acknowledged offsets,
and a gap at the head (faust delivered offset 1692 first while the group had
committed 1686; offsets.py and gap_reader.py read 1686..1691 directly) makes
``Consumer._new_offset`` return None for good: the partition is processed but never
committed again, until the next rebalance re-reads everything since. Seen in a chaos
run: a partition stuck 22 records behind for minutes after a worker restart.
:func:`ack_offsets` records the offsets read directly as acknowledged, so the commit
moves past them.

Third: when faust skips offsets it notes them as a "gap" (``Consumer._add_gap``: meant
for compacted topics' holes) and ``_new_offset`` later appends the gap's offsets to the
acknowledged ones without checking for those there already. The offsets ioacct read
directly were acknowledged twice, and with duplicates faust's run of consecutive
offsets ends at the first one: the commit advanced by one offset per commit interval
(2.8 s), 10 minutes for a gap of 200 records. Seen in the chaos runs as a partition
committing 74, 75, 76, ... after a worker restart, and once as a CI run timing out.
Worse, the gap faust notes runs up to the record it delivered, so while the agent was
still reading the gap, the commit could pass records not yet processed. ioacct's agents
already check every offset of their input (offsets.py) and acknowledge each one they
handled, holes of a compacted topic included; so faust's gap bookkeeping is switched
off (:func:`_add_gap`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer

from streams.pipeline.guard.offsets import CommitWatch

_original_send_pending = ProducerBuffer._send_pending
_original_flush = ProducerBuffer.flush
_original_add_gap = Consumer._add_gap


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


def apply() -> None:
    """Idempotent; called by build_app before any worker starts."""
    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = _flush  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]
