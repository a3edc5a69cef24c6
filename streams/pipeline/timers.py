"""The worker's timers: ticks that close idle partitions' windows, the commit watch, the
tables' checkpoints and giving free heap back."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from streams.core.keys import TICK_KEY
from streams.pipeline.guard import faust_fixes
from streams.pipeline.guard.offsets import CommitWatch
from streams.pipeline.heap import can_release, keep_heap_for_reuse, release_free_heap
from streams.pipeline.tables import LAND_WAIT_S

if TYPE_CHECKING:
    from streams.pipeline.app import Pipeline

log = logging.getLogger(__name__)
COMMIT_STALL_S = 60.0  # the worker commits every commit_interval_s: a minute held is no hiccup


def register_ticks(p: Pipeline) -> None:
    """Once a second, a Tick into each owned raw partition: idle partitions close windows
    from inside their own stream, where table writes land in the right changelog."""

    @p.app.timer(interval=p.settings.tick_interval_s)
    async def tick() -> None:
        raw = p.settings.raw_topic
        value = p.schemas.encode("Tick", {"wall_ns": time.time_ns(),
                                          "worker": p.settings.web_url})
        for tp in p.app.consumer.assignment():
            if tp.topic == raw and _needs_tick(p, tp.partition):
                await p.raw_topic.send(key=TICK_KEY, value=value, partition=tp.partition)


def _needs_tick(p: Pipeline, partition: int) -> bool:
    """Only where windows are open; an unseen partition gets one, so that a restarted
    worker rebuilds its windows from the table even if no input comes."""
    windows = p.partitions.get(partition)
    return windows is None or windows.needs_ticks


def register_commit_watch(p: Pipeline) -> None:
    """A WARNING for every input partition whose commit stays put for a minute while
    records past it are processed (offsets.CommitWatch), with what faust holds for it."""
    watch = CommitWatch(COMMIT_STALL_S)

    @p.app.timer(interval=COMMIT_STALL_S / 6)
    async def watch_commits() -> None:
        next_offsets = {topic: guard.offsets.next_offsets for topic, guard in p.inputs.items()}
        for line in faust_fixes.held_commits(p.app.consumer, next_offsets, watch,
                                             time.monotonic()):
            p.stats.commit_stalls += 1
            log.warning("%s", line)


def register_checkpoints(p: Pipeline) -> None:
    """Every ``IOACCT_TABLE_CHECKPOINT_S``, a checkpoint of the tables (checkpoints.py),
    counted in /status and /metrics once valid."""
    checkpoints = p.checkpoints
    if checkpoints is None:
        return

    @p.app.timer(interval=p.settings.table_checkpoint_s)
    async def checkpoint_tables() -> None:
        await checkpoints.once(LAND_WAIT_S)
        p.stats.table_checkpoints = checkpoints.made_valid


def register_heap_release(p: Pipeline) -> None:
    """Every ``IOACCT_HEAP_RELEASE_S``, the heap's free pages back to the system (heap.py),
    counted in /status; not where the C library cannot (not glibc) or when 0 (then glibc's
    and numpy's defaults are left alone too)."""
    if p.settings.heap_release_s <= 0 or not can_release():
        return
    keep_heap_for_reuse()  # between releases, freed arrays are reused, not faulted in

    @p.app.timer(interval=p.settings.heap_release_s)
    async def release_heap() -> None:
        release_free_heap()
        p.stats.heap_releases += 1
