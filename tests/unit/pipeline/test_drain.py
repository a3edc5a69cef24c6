"""drain.py's consumer loop against faust's own, message for message (no broker needed).

Both loops run over the same fetched messages with the same callbacks: most callbacks
finish at once, some wait (a full stream queue), one waits until the flow is suspended
under it (a rebalance), and one offset comes again (faust drops it). What each loop
delivered, what it cut short and the read offsets it leaves must be the same; and ours
must not make tasks for the callbacks that do not wait.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from mode import Service

from streams.pipeline import drain

TPS = ("raw-0", "raw-1")


class FakeConsumer(Service):
    """What faust's ``_drain_messages`` reads of its consumer, over a list of fetches."""

    consumer_stopped_errors = ()

    def __init__(self, fetches: list[list[tuple[str, int]]], callback: Callable[..., Any]
                 ) -> None:
        super().__init__()
        self.fetches = fetches
        self.callback = callback
        self._read_offset: dict[str, int | None] = collections.defaultdict(lambda: None)
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._commit_every = None
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda t: False))
        self.suspend_flow = asyncio.Event()
        self.fetcher = Service()
        self.wait_firsts = 0

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        self.wait_firsts += 1
        return await super().wait_first(*coros, timeout=timeout)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[str, Any]]:
        if not self.fetches:
            self.fetcher._stopped.set()
            return
        for tp, offset in self.fetches.pop(0):
            yield tp, SimpleNamespace(tp=tp, topic="raw", offset=offset, key=None, value=b"")


def _fetches() -> list[list[tuple[str, int]]]:
    out: list[list[tuple[str, int]]] = []
    next_offset = dict.fromkeys(TPS, 0)
    for k in range(12):
        fetch = []
        for i in range(30):
            tp = TPS[(k + i) % 2]
            fetch.append((tp, next_offset[tp]))
            next_offset[tp] += 1
        out.append(fetch)
    out[5].insert(7, (TPS[0], 3))  # an offset fetched again: dropped by both loops
    return out


async def _run(loop_fn: Any) -> tuple[list[Any], list[Any], dict[str, Any], int, int]:
    """Deliveries (tp, offset, how) and cut-short ones of ``loop_fn`` over _fetches()."""
    delivered: list[Any] = []
    cut: list[Any] = []
    never = asyncio.Event()
    consumer: FakeConsumer

    async def callback(message: Any) -> None:
        key = (message.tp, message.offset)
        if message.offset == 40 and message.tp == TPS[1]:  # waits until the flow stops
            asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
            try:
                await never.wait()
            except asyncio.CancelledError:
                cut.append(key)
                raise
        elif message.offset % 7 == 3:  # a full queue: waits a few loop turns
            try:
                for _ in range(3):
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                cut.append(key)
                raise
            delivered.append((*key, "waited"))
            return
        delivered.append((*key, "at once"))

    consumer = FakeConsumer(_fetches(), callback)
    tasks_before = len(asyncio.all_tasks())
    made = 0
    original_ensure_future = asyncio.ensure_future

    def counting_ensure_future(*args: Any, **kwargs: Any) -> Any:
        nonlocal made
        made += 1
        return original_ensure_future(*args, **kwargs)

    asyncio.ensure_future = counting_ensure_future  # type: ignore[assignment]
    try:
        await loop_fn(consumer, consumer.fetcher)
    finally:
        asyncio.ensure_future = original_ensure_future  # type: ignore[assignment]
    assert len(asyncio.all_tasks()) == tasks_before  # nothing left behind
    return delivered, cut, dict(consumer._read_offset), consumer.wait_firsts, made


def test_the_loop_delivers_what_fausts_does() -> None:
    faust_run = asyncio.run(_run(drain._FAUST_DRAIN))
    ours = asyncio.run(_run(drain._drain_messages))
    assert ours[:3] == faust_run[:3]
    delivered, cut, read_offsets, _, _ = ours
    # Once the flow is suspended under (raw-1, 40), faust cuts short every callback that
    # has to wait (the rebalance refetches them from the committed offset); the others
    # are still delivered. Each message is either delivered or cut, once.
    assert cut[0] == (TPS[1], 40)
    assert all(offset % 7 == 3 for _, offset in cut[1:]) and len(cut) > 1
    seen = [(tp, offset) for tp, offset, _ in delivered] + cut
    assert sorted(seen) == sorted((tp, o) for tp in TPS for o in range(180))
    assert any(how == "waited" for *_, how in delivered)  # waited, not cut: before it
    assert read_offsets == {TPS[0]: 179, TPS[1]: 179}
    faust_waits, ours_waits = faust_run[3], ours[3]
    assert faust_waits == 12 * 30  # faust: a wait_first (4 tasks) a message
    waited = sum(how == "waited" for *_, how in delivered) + len(cut)
    assert ours_waits == waited  # ours: only for the callbacks that had to wait
    assert (faust_run[4], ours[4]) == (4 * faust_waits, 4 * ours_waits)  # tasks made


async def _deliver(callback: Any, *, suspend_after_s: float | None = None
                   ) -> tuple[Any, list[str]]:
    service = Service()
    flow = asyncio.Event()
    if suspend_after_s is not None:
        asyncio.get_running_loop().call_later(suspend_after_s, flow.set)
    seen: list[str] = []
    try:
        await drain.deliver(service, callback(seen), flow)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return exc, seen
    return None, seen


def test_deliver_passes_results_and_errors_through() -> None:
    async def at_once(seen: list[str]) -> None:
        seen.append("done")

    async def fails_at_once(seen: list[str]) -> None:
        raise ValueError("bad message")

    async def fails_after_waiting(seen: list[str]) -> None:
        await asyncio.sleep(0.001)
        seen.append("woke")
        raise KeyError("later")

    async def waits_on_a_future(seen: list[str]) -> None:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.001, fut.set_result, 7)
        seen.append(f"got {await fut}")

    assert asyncio.run(_deliver(at_once)) == (None, ["done"])
    exc, seen = asyncio.run(_deliver(fails_at_once))
    assert isinstance(exc, ValueError) and seen == []
    exc, seen = asyncio.run(_deliver(fails_after_waiting))
    assert isinstance(exc, KeyError) and seen == ["woke"]
    assert asyncio.run(_deliver(waits_on_a_future)) == (None, ["got 7"])


def test_a_suspended_flow_cancels_the_waiting_rest() -> None:
    async def waits_forever(seen: list[str]) -> None:
        seen.append("started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("cleaned up")

    assert asyncio.run(_deliver(waits_forever, suspend_after_s=0.01)) == (
        None, ["started", "cancelled", "cleaned up"])


def test_faust_loop_is_the_one_copied() -> None:
    """A faust upgrade that changes its loop fails here until drain.py is read again."""
    assert drain.faust_drain_sha256() == drain.FAUST_DRAIN_SHA256


def test_install_replaces_fausts_loop() -> None:
    original = faust_consumer.Consumer._drain_messages
    try:
        drain.install()
        assert faust_consumer.Consumer._drain_messages is drain._drain_messages
    finally:
        faust_consumer.Consumer._drain_messages = original  # type: ignore[method-assign]


@pytest.mark.parametrize("n", [1, 3])
def test_rest_answers_the_task_as_the_coroutine_would(n: int) -> None:
    """A value sent in and the coroutine's return value come through the wrapper."""
    async def body() -> int:
        total = 0
        for _ in range(n):
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(fut.set_result, 5)
            total += await fut
        return total

    async def run() -> int:
        coro = body()
        pending = coro.send(None)
        return await asyncio.ensure_future(drain._Rest(coro, pending))

    assert asyncio.run(run()) == 5 * n
