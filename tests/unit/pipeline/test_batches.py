"""The step runner's admission (pipeline/batches.py): each offset once and in order,
faust's skipped offsets read first, its repeats dropped, gaps acknowledged only after the
step; and the changelog partition of a step's table writes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.streams import current_event

from streams.pipeline.app import WorkerStats
from streams.pipeline.batches import admit, by_partition, writing_for
from streams.pipeline.guard.order import InputGuard

TOPIC = "raw"


def event(partition: int, offset: int) -> Any:
    message = SimpleNamespace(topic=TOPIC, partition=partition, offset=offset,
                              tp=(TOPIC, partition), value=f"v{partition}@{offset}")
    return SimpleNamespace(message=message, value=f"v{partition}@{offset}")


def pipeline(committed: int, topic_end: int) -> Any:
    async def committed_or_first(partition: int, topic: str) -> int:
        return committed

    async def read(partition: int, start: int, end: int, topic: str) -> list[Any]:
        assert end <= topic_end
        return [event(partition, o).message for o in range(start, end)]

    return SimpleNamespace(
        gap_reader=SimpleNamespace(committed_or_first=committed_or_first, read=read),
        stats=WorkerStats(), settings=SimpleNamespace(raw_topic=TOPIC))


def offsets(records: list[tuple[Any, Any]]) -> list[int]:
    return [message.offset for _, message in records]


def test_each_offset_once_in_order_with_gaps_read_first_and_repeats_dropped() -> None:
    p, guard = pipeline(committed=10, topic_end=100), InputGuard(TOPIC)
    # faust delivers 12 (10 and 11 skipped), 13, then 12 again, 13 again, then 16
    delivered = [event(0, o) for o in (12, 13, 12, 13, 16)]
    records, gaps = asyncio.run(admit(p, guard, delivered))
    assert offsets(records) == [10, 11, 12, 13, 14, 15, 16]
    assert [(m.offset, start) for m, start in gaps] == [(12, 10), (16, 14)]
    assert p.stats.records_seen_again == 2 and p.stats.records_read_past_faust == 4
    assert guard.replay_from == {0: 10} and guard.offsets.next_offsets == {0: 17}
    # the next step: what was admitted is never admitted again
    again, _ = asyncio.run(admit(p, guard, [event(0, 16), event(0, 17)]))
    assert offsets(again) == [17]


def test_a_step_is_split_by_partition_in_delivery_order() -> None:
    events = [event(1, 5), event(0, 3), event(1, 6), event(0, 4)]
    groups = by_partition(events)
    assert {k: [e.message.offset for e in v] for k, v in groups.items()} == {1: [5, 6],
                                                                             0: [3, 4]}


class Event:
    """Like faust's events: weakly referenceable (faust keeps the current one by weakref)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def test_table_writes_go_to_the_partition_of_the_event_set() -> None:
    first, second = Event(2), Event(5)
    assert current_event() is None
    with writing_for(first):
        assert current_event() is first
        with writing_for(second):
            assert current_event().message.partition == 5
        assert current_event() is first
    assert current_event() is None
