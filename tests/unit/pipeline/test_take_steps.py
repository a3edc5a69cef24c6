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

from streams.pipeline.batches import (
    BEHIND_S,
    BIG_RECORD_BYTES,
    CATCH_UP_MIN_RECORDS_PER_S,
    behind,
    take_steps,
)

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


def test_a_backlog_that_stopped_coming_is_taken_without_waiting_on() -> None:
    """Records behind wait for more only while more come fast (a backlog being fetched):
    three, then nothing for GAP_S, are a step at once."""
    steps, acked_at_step, _ = asyncio.run(_steps(age_s=BEHIND_S + 5))
    assert steps == [[0, 1, 2], [3, 4, 5]] and acked_at_step == [[], [0, 1, 2]]


def test_records_behind_that_keep_coming_fast_are_waited_for() -> None:
    """Records behind coming faster than CATCH_UP_MIN_RECORDS_PER_S make one step, up to
    the catch-up wait, though they take many live waits to come."""

    async def run() -> tuple[list[list[Any]], float]:
        stream = Stream()
        steps: list[list[Any]] = []
        per_wait = int(CATCH_UP_MIN_RECORDS_PER_S * WITHIN_S) * 2  # twice the rate
        waits = 6

        async def take() -> None:
            taken = take_steps(stream, 10**6, WITHIN_S, CATCH_UP_S)
            try:
                async for events in taken:
                    steps.append([e.value for e in events])
                    if sum(map(len, steps)) == per_wait * waits:
                        break
            finally:
                await taken.aclose()  # type: ignore[attr-defined]

        taker = asyncio.ensure_future(take())
        await asyncio.sleep(0)
        for w in range(waits):
            await stream.deliver(range(w * per_wait, (w + 1) * per_wait), BEHIND_S + 5)
            await asyncio.sleep(WITHIN_S / 2)
        await asyncio.wait_for(taker, CATCH_UP_S + 10)
        return steps, per_wait * waits

    steps, n = asyncio.run(run())
    assert steps == [list(range(int(n)))]


def test_a_full_step_goes_at_once_even_behind() -> None:
    # 4 records at most: a backlog of 6 comes at once, the first step is full
    steps, acked = asyncio.run(_handled_slowly(list(range(6)), 4, 4, age_s=BEHIND_S + 5))
    assert steps == [[0, 1, 2, 3], [4, 5]] and acked == list(range(6))


def test_behind_is_the_record_age_against_the_wall_clock() -> None:
    now = 1_000.0
    at = SimpleNamespace(message=SimpleNamespace(timestamp=now - BEHIND_S))
    assert not behind(at, now)
    assert behind(SimpleNamespace(message=SimpleNamespace(timestamp=now - BEHIND_S - 0.01)),
                  now)


async def _handled_slowly(values: list[Any], max_records: int, big_max_records: int,
                          max_bytes: int = 1 << 30, age_s: float = 0.0
                          ) -> tuple[list[list[Any]], list[int]]:
    """Every record delivered at once (a backlog), each step handled with awaits in it (as
    the worker's step sends its changelogs and outputs); the steps taken, and how many
    records the buffer held when each step was handed over."""
    stream = Stream()
    steps: list[list[Any]] = []

    async def take() -> None:
        taken = take_steps(stream, max_records, WITHIN_S, CATCH_UP_S, big_max_records,
                           max_bytes)
        try:
            async for events in taken:
                steps.append([e.value for e in events])
                for _ in range(20):
                    await asyncio.sleep(0)  # the stream task may add to the buffer
                if sum(map(len, steps)) == len(values):
                    break
        finally:
            await taken.aclose()  # type: ignore[attr-defined]

    taker = asyncio.ensure_future(take())
    await asyncio.sleep(0)
    stream.current_event = None
    for value in values:
        stream.current_event = SimpleNamespace(
            value=value, message=SimpleNamespace(timestamp=time.time() - age_s))
        for processor in stream._processors:
            await processor(value)
    await asyncio.wait_for(taker, CATCH_UP_S + 10)
    return steps, stream.acked


def test_small_records_wait_while_a_step_is_handled_as_faust_has_it() -> None:
    values = [bytes([i]) * 100 for i in range(10)]
    steps, acked = asyncio.run(_handled_slowly(values, 2, 8))
    assert [len(step) for step in steps] == [2] * 5
    assert sum(steps, []) == values and acked == values


def test_big_records_make_bigger_steps_taken_while_one_is_handled() -> None:
    """The first step is as faust's; its records are big (a host's batches), so the next
    step's come in while it is handled, up to the big limit."""
    values = [bytes([i]) * BIG_RECORD_BYTES for i in range(10)]
    steps, acked = asyncio.run(_handled_slowly(values, 2, 8))
    assert [len(step) for step in steps] == [2, 8]
    assert sum(steps, []) == values and acked == values  # each once, in order


def test_a_step_of_big_records_stops_at_its_bytes() -> None:
    values = [bytes([i]) * BIG_RECORD_BYTES for i in range(10)]
    steps, acked = asyncio.run(_handled_slowly(values, 2, 8, max_bytes=3 * BIG_RECORD_BYTES))
    assert [len(step) for step in steps] == [2, 3, 3, 2]
    assert sum(steps, []) == values and acked == values
