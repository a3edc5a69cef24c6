"""Each offset of an agent's input once and in order: the check before every record.

:class:`InputGuard` is one input topic's record of what was handled; :func:`check`
decides, record by record, whether the agent processes it (batches.py ``admit``), after
:func:`read_gap` reads any records faust skipped before it (``gap_reader``), and
:func:`ack_gap` acknowledges them in faust's bookkeeping (``faust_fixes.ack_offsets``) so
that the commit can move past them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faust.types import TP

from streams.pipeline.guard import faust_fixes
from streams.pipeline.guard.offsets import OffsetTracker, Verdict

if TYPE_CHECKING:
    from streams.pipeline.app import Pipeline

log = logging.getLogger(__name__)


@dataclass
class InputGuard:
    """One input topic of an agent: which offsets it handled (offsets.py), and where each
    newly assigned partition's outputs must be sent again from (the committed offset)."""

    topic: str
    offsets: OffsetTracker = field(default_factory=OffsetTracker)
    # Partitions just assigned -> the group's committed offset: outputs made at or past
    # it are sent again before anything else (PartitionWindows.replay_outputs).
    replay_from: dict[int, int] = field(default_factory=dict)

    def forget(self, partition: int) -> None:
        self.offsets.forget(partition)
        self.replay_from.pop(partition, None)


async def check(p: Pipeline, guard: InputGuard, message: Any) -> tuple[Verdict, int]:
    """The guard's verdict on ``message`` (and where a gap starts), first learning the
    group's committed offset of a partition it has not seen since it was assigned."""
    partition = message.partition
    if not guard.offsets.knows(partition):
        committed = await p.gap_reader.committed_or_first(partition, guard.topic)
        guard.offsets.start(partition, committed)
        guard.replay_from[partition] = committed
    return guard.offsets.check(partition, message.offset)


async def read_gap(p: Pipeline, guard: InputGuard, message: Any, expected: int) -> list[Any]:
    """The records of offsets ``expected`` up to ``message``'s, which faust skipped, read
    directly. Acknowledge the range (:func:`ack_gap`) only once they are handled: faust
    may commit up to an acknowledged offset at any await."""
    partition = message.partition
    # The stats topics are compacted: a range may hold fewer records, or none.
    log.log(logging.WARNING if guard.topic == p.settings.raw_topic else logging.INFO,
            "faust delivered %s[%d]@%d but not %d..%d: reading those directly",
            message.topic, partition, message.offset, expected, message.offset - 1)
    read = await p.gap_reader.read(partition, expected, message.offset, guard.topic)
    p.stats.records_read_past_faust += len(read)
    return list(read)


def ack_gap(p: Pipeline, message: Any, expected: int) -> None:
    """Every offset from ``expected`` up to ``message``'s acknowledged, holes too (a
    compacted topic has them): else faust never commits past the gap (faust_fixes:
    ack_offsets, _add_gap)."""
    faust_fixes.ack_offsets(p.app.consumer, message.tp, range(expected, message.offset))


def committed_offset(consumer: Any, message: Any) -> int:
    """The offset faust's ``consumer`` last committed for the message's partition (-1: none
    yet): the stages keep the windows they emitted at or past it (their records may not
    have landed, and replay_outputs must find them after a crash)."""
    # faust's own record of its commits (faust_fixes.py reads it too).
    committed = consumer._committed_offset.get(TP(message.topic, message.partition))
    return -1 if committed is None else int(committed)


def record_wall_ns(message: Any, default_ns: int) -> int:
    """A raw record's Kafka timestamp in ns: faust's messages carry seconds (float),
    aiokafka's records (gap_reader.py) milliseconds (int); ``default_ns`` if it has none."""
    timestamp = getattr(message, "timestamp", None)
    if timestamp is None or timestamp < 0:
        return default_ns
    if isinstance(timestamp, float):
        return round(timestamp * 1000) * 1_000_000
    return int(timestamp) * 1_000_000
