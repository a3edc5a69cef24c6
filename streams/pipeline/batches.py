"""Agents that take many records per step (DESIGN.md decision 2): faust's per-record loop
costs ~60-75 µs before any work and numpy ~200 µs per call, so the work of a step is done
for all the records faust has ready, partition by partition.

The guard's contract holds per record (each offset once, in order: guard/order.py), and
three faust edges are handled here:

* a table write goes to the changelog partition of faust's *current event*, which
  ``take_events`` does not set in the agent's task: each partition's records are handled
  with the current event set to one of that partition's (:func:`writing_for`);
* ``take_events`` keeps records buffered across a rebalance: the records of a partition
  this worker no longer owns are dropped unprocessed (their next owner reads them from
  the committed offset), never written to a changelog it no longer owns, and never
  acknowledged;
* acks: ``take_events`` acknowledges the step's records after the step returns, so a
  commit never covers a record whose outputs were not handed to the producer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from faust.streams import _current_event
from faust.types import TP

from streams.pipeline.guard.offsets import Verdict
from streams.pipeline.guard.order import ack_gap, check, read_gap

if TYPE_CHECKING:
    from streams.pipeline.app import Pipeline
    from streams.pipeline.guard.order import InputGuard

log = logging.getLogger(__name__)
EXIT_AGENT_FAILED = 70  # EX_SOFTWARE
# (value, message) of each record of one partition, in offset order.
Records = list[tuple[Any, Any]]
BatchHandler = Callable[[int, Records], Awaitable[None]]


@contextlib.contextmanager
def writing_for(event: Any) -> Iterator[None]:
    """Table writes within go to ``event``'s partition (faust's current event)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def by_partition(events: Sequence[Any]) -> dict[int, list[Any]]:
    """The events of a step per partition, each list in the order faust delivered them."""
    groups: dict[int, list[Any]] = {}
    for event in events:
        groups.setdefault(event.message.partition, []).append(event)
    return groups


def owns(p: Pipeline, message: Any) -> bool:
    """Whether ``message``'s partition is assigned to this worker now."""
    return TP(message.topic, message.partition) in p.app.consumer.assignment()


async def admit(p: Pipeline, guard: InputGuard, events: Sequence[Any]
                ) -> tuple[Records, list[tuple[Any, int]]]:
    """The records to handle for ``events`` of one partition, in offset order: each new
    offset once, preceded by any offsets faust skipped before it (read here), and none it
    delivered again. The guard marks them handled as they are admitted: the step handles
    all of them, or the worker exits without committing. Also the gaps read, as (message,
    first offset), to acknowledge once the step has handled them (order.ack_gap)."""
    records: Records = []
    gaps: list[tuple[Any, int]] = []
    for event in events:
        message = event.message
        verdict, expected = await check(p, guard, message)
        if verdict is Verdict.SEEN:
            p.stats.records_seen_again += 1
            continue
        if verdict is Verdict.GAP:
            records += [(r.value, r) for r in await read_gap(p, guard, message, expected)]
            gaps.append((message, expected))
        records.append((event.value, message))
        guard.offsets.done(message.partition, message.offset)
    return records, gaps


def batch_agent_over(p: Pipeline, topic: Any, name: str, handle: BatchHandler,
                     max_records: int, within_s: float) -> None:
    """An agent that hands ``handle`` the records of ``topic`` up to ``max_records`` at a
    time (or what came within ``within_s``), partition by partition, each record once
    and in offset order; it exits the worker if a step fails."""
    guard = p.input_guard(topic.get_topic_name())

    @p.app.agent(topic, name=name)
    async def agent(stream: Any) -> None:
        async for events in stream.take_events(max_records, within_s):
            for partition, group in by_partition(events).items():
                if not owns(p, group[0].message):
                    p.stats.records_dropped_revoked += len(group)
                    for event in group:
                        # take_events acks what it yielded after the step; were the
                        # partition assigned here again meanwhile, that ack would let
                        # faust commit past records nobody processed
                        event.message.acked = True
                    continue
                try:
                    records, gaps = await admit(p, guard, group)
                    if records:
                        with writing_for(group[-1]):
                            await handle(partition, records)
                    for message, expected in gaps:
                        ack_gap(p, message, expected)
                except Exception:
                    # Faust would restart the agent and ack the records it failed on: lost
                    # records. Exit instead, without committing; the restarted worker
                    # reprocesses from the last commit and the replay checks absorb repeats.
                    log.exception("%s failed at %s[%d] (offsets %d..%d); exiting without "
                                  "commit", name, group[0].message.topic, partition,
                                  group[0].message.offset, group[-1].message.offset)
                    os._exit(EXIT_AGENT_FAILED)
