"""take_steps (pipeline/batches.py): faust's take_events, but a step whose first record
is old waits longer for more. The stream here is a stand-in with the members of faust's
Stream that take_steps uses (the worker's integration tests and the bench run it on
faust's own); records are handed to its processors as faust's stream task does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace
from typing import Any

from streams.pipeline.batches import BEHIND_S, behind, take_steps

GAP_S = 1.0  # between the two groups of records: 20x the live wait
WITHIN_S = 0.05
CATCH_UP_S = 3.0


class Stream:
    def __init__(self) -> None:
        self.enable_acks = True
        self.should_stop = False
        self.loop = asyncio.get_running_loop()
        self.channel: list[Any] = []
        self.current_event: Any = None
        self._processors: list[Any] = []
        self.acked: list[int] = []

    def add_processor(self, processor: Any) -> None:
        self._processors.append(processor)

    def _enable_passive(self, channel: Any) -> None:
        pass

    async def wait(self, event: asyncio.Event) -> None:
        await event.wait()

    async def wait_for_stopped(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def ack(self, event: Any) -> None:
        self.acked.append(event.value)

    async def crash(self, exc: BaseException) -> None:
        raise AssertionError("crashed") from exc

    async def deliver(self, values: range, age_s: float) -> None:
        """As faust's stream task: each record through the processors, in turn."""
        for value in values:
            self.current_event = SimpleNamespace(
                value=value, message=SimpleNamespace(timestamp=time.time() - age_s))
            for processor in self._processors:
                await processor(value)


async def _steps(age_s: float, max_records: int = 100, groups: int = 2
                 ) -> tuple[list[list[int]], list[list[int]], Stream]:
    """Two groups of 3 records GAP_S apart; the steps taken, and what was acknowledged
    when each step was handed over."""
    stream = Stream()
    steps: list[list[int]] = []
    acked_at_step: list[list[int]] = []
    wanted = 3 * groups

    async def take() -> None:
        taken = take_steps(stream, max_records, WITHIN_S, CATCH_UP_S)
        try:
            async for events in taken:
                steps.append([e.value for e in events])
                acked_at_step.append(list(stream.acked))
                if sum(map(len, steps)) == wanted:
                    break
        finally:
            await taken.aclose()  # type: ignore[attr-defined]

    taker = asyncio.ensure_future(take())
    await asyncio.sleep(0)  # its processor is added
    for g in range(groups):
        if g:
            await asyncio.sleep(GAP_S)
        await stream.deliver(range(3 * g, 3 * g + 3), age_s)
    await asyncio.wait_for(taker, CATCH_UP_S + 10)
    return steps, acked_at_step, stream


def test_live_records_are_taken_within_the_short_wait() -> None:
    steps, acked_at_step, stream = asyncio.run(_steps(age_s=0.0))
    assert steps == [[0, 1, 2], [3, 4, 5]]
    # a step's records are acknowledged after it, never before
    assert acked_at_step == [[], [0, 1, 2]]
    assert stream.acked == [0, 1, 2, 3, 4, 5] and stream.enable_acks
    assert stream._processors == []  # the generator closed: its processor is gone


def test_records_behind_wait_for_more_up_to_the_catch_up_wait() -> None:
    steps, acked_at_step, _ = asyncio.run(_steps(age_s=BEHIND_S + 5))
    assert steps == [[0, 1, 2, 3, 4, 5]] and acked_at_step == [[]]


def test_a_full_step_goes_at_once_even_behind() -> None:
    # 4 records at most: the first step is full before the second group comes
    steps, _, _ = asyncio.run(_steps(age_s=BEHIND_S + 5, max_records=4))
    assert steps[0] == [0, 1, 2, 3] and sum(steps, []) == list(range(6))


def test_behind_is_the_record_age_against_the_wall_clock() -> None:
    now = 1_000.0
    at = SimpleNamespace(message=SimpleNamespace(timestamp=now - BEHIND_S))
    assert not behind(at, now)
    assert behind(SimpleNamespace(message=SimpleNamespace(timestamp=now - BEHIND_S - 0.01)),
                  now)
