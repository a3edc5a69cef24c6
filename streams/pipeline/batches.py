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
* acks: the step's records are acknowledged after the step returns, so a commit never
  covers a record whose outputs were not handed to the producer.

Steps are taken by :func:`take_steps`, faust's ``take_events`` with two changes. A step
waits ``within_s`` for records (what a live fleet's windows can afford), or up to
``catch_up_s`` while its first record is older than ``BEHIND_S`` (a backlog: after a
failover, a restart, a burst) and records keep coming fast, so that a worker that is
behind takes bigger steps and writes each window fewer times. (c) at 1,000 volumes:
150,525 events/s with 250 ms steps, 182,342 with 1 s ones (docs/performance.md, session
18). And records that carry a host's batch (big ones) are taken while a step is handled,
up to a larger step: the worker does not idle while the next step's records come
(session 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from faust.streams import _current_event
from faust.types import TP
from mode.utils.aiter import aiter
from mode.utils.futures import notify

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
# A raw record this big (bytes) or bigger carries a host's batch (hundreds of events):
# steps of such records are taken larger, and the next one while one is handled
# (take_steps); ~40 B an event in layout 2.
BIG_RECORD_BYTES = 2048
# A step behind waits on (up to catch_up_s) only while records come at least this fast: a
# backlog's fetches deliver thousands a second, a live fleet's records a few hundred.
CATCH_UP_MIN_RECORDS_PER_S = 2000
# A step whose first record is older than this (its Kafka timestamp against the wall
# clock) is catching up: it waits up to catch_up_s for more. A live fleet's records are
# at most a step and the producer's flush age old.
BEHIND_S = 2.0


@contextlib.contextmanager
def writing_for(event: Any) -> Iterator[None]:
    """Table writes within go to ``event``'s partition (faust's current event)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def behind(event: Any, now_s: float) -> bool:
    """Whether ``event``'s record is older than :data:`BEHIND_S`."""
    return bool(now_s - event.message.timestamp > BEHIND_S)


def take_steps(stream: Any, max_records: int, within_s: float, catch_up_s: float,
               big_max_records: int | None = None, max_bytes: int | None = None
               ) -> AsyncIterator[list[Any]]:
    """The events of ``stream`` up to ``max_records`` at a time: what came within
    ``within_s``, or within ``catch_up_s`` when the first is :func:`behind` (module
    doc). faust's ``Stream.take_events`` otherwise, line for line (faust-streaming
    0.11): records are added to the buffer by a processor in the stream's own task,
    which stops adding while a step is handled; the step's events are acknowledged once
    the caller is done with it; the stream closes the generator when it stops.

    Big records (those of the last step averaged :data:`BIG_RECORD_BYTES` or more: a
    host's batches of hundreds of events) are taken up to ``big_max_records`` (None:
    ``max_records``) and ``max_bytes`` (None: no bound; the worker's is its setting
    ``step_max_bytes``) a step, and the next step's are added while one is
    handled, so that a worker that is behind makes fewer, larger units without waiting
    for each step's records to come (docs/performance.md, session 20). Small records keep
    faust's rule: many of them cost the memory of their faust events, not their bytes."""
    steps = _take_steps(stream, max_records, within_s, catch_up_s,
                        big_max_records or max_records,
                        sys.maxsize if max_bytes is None else max_bytes)
    active = getattr(stream, "_active_agens", None)  # faust closes these at its stop
    if active is not None:
        active.add(steps)
    return steps


def _size(event: Any) -> int:
    value = event.value
    return len(value) if isinstance(value, bytes | bytearray) else 0


async def _take_steps(stream: Any, max_records: int, within_s: float, catch_up_s: float,
                      big_max_records: int, max_bytes: int) -> AsyncIterator[list[Any]]:
    buffer: list[Any] = []
    buffer_bytes = 0
    big = False  # the last step's records were big (take_steps)
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    buffer_consuming: asyncio.Future[None] | None = None
    stream_enable_acks: bool = stream.enable_acks

    def full() -> bool:
        return (len(buffer) >= (big_max_records if big else max_records)
                or buffer_bytes >= max_bytes)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal buffer_consuming, buffer_bytes
        try:
            if buffer_consuming is not None and not big:
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_steps found current_event None")
            buffer.append(event)
            buffer_bytes += _size(event)
            if full():
                buffer_full.set()  # the step starts now,
                buffer_consumed.clear()  # and no more than the limit go in it
                await stream.wait(buffer_consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as faust: the stream crashes (the worker exits)
            log.exception("adding to a step failed: %r", exc)
            await stream.crash(exc)
        return value

    stream.enable_acks = False  # acknowledged here, after the step
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            started = time.monotonic()
            await stream.wait_for_stopped(buffer_full, timeout=within_s)
            seen = len(buffer)  # a step behind waits while records keep coming fast
            while (buffer and not buffer_full.is_set() and behind(buffer[0], time.time())
                   and (left := catch_up_s - (time.monotonic() - started)) > 0):
                await stream.wait_for_stopped(buffer_full, timeout=min(left, within_s))
                if len(buffer) - seen < CATCH_UP_MIN_RECORDS_PER_S * within_s:
                    break  # the backlog is in: waiting would only idle
                seen = len(buffer)
            if not buffer:
                continue
            events = list(buffer)  # the step; the buffer takes the next one's (big ones)
            big = buffer_bytes >= BIG_RECORD_BYTES * len(events)
            buffer.clear()
            buffer_bytes = 0
            buffer_consuming = stream.loop.create_future()
            buffer_full.clear()
            buffer_consumed.set()
            try:
                yield events
            finally:
                for event in events:
                    await stream.ack(event)
                notify(buffer_consuming)
                buffer_consuming = None
    finally:
        stream.enable_acks = stream_enable_acks
        stream._processors.remove(add_to_buffer)


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


def batch_agent_over(p: Pipeline, topic: Any, name: str, handle: BatchHandler) -> None:
    """An agent that hands ``handle`` the records of ``topic`` in steps of up to
    ``step_max_records`` (:func:`take_steps`: what came within ``step_wait_ms``, or
    ``step_catch_up_wait_ms`` when behind), partition by partition, each record once and
    in offset order; it exits the worker if a step fails."""
    guard = p.input_guard(topic.get_topic_name())
    s = p.settings

    @p.app.agent(topic, name=name)
    async def agent(stream: Any) -> None:
        async for events in take_steps(stream, s.step_max_records, s.step_wait_ms / 1000,
                                       s.step_catch_up_wait_ms / 1000,
                                       s.step_max_big_records, s.step_max_bytes):
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
