"""faust's consumer loop, with its per-message hand-over made cheap (issue 17).

faust-streaming's ``Consumer._drain_messages`` hands every fetched message to the
conductor with ``await self.wait_first(callback(message), self.suspend_flow.wait())``:
for each message mode's ``wait_first`` makes four tasks (the callback, the flow event,
the consumer's stopped and crashed events), an ``asyncio.wait`` over them and, once the
callback is done, cancels the other three. The callback itself (the conductor putting the
message on its streams' queues) almost never waits: its queue has room. With the
accounting agent doing no work at all, that hand-over was most of the ~170 µs of CPU a
raw record cost the worker (docs/performance.md, session 26).

:func:`install` replaces the loop with faust's own, line for line, except for the
hand-over: the callback's first step runs inline, and only if it has to wait (a full
stream queue, flow control) does the rest of it go to ``wait_first`` with the flow event,
exactly as faust does. A callback that finishes without waiting gave ``wait_first`` no
chance to see the flow suspended or the consumer stopped either: faust runs the
callback's first step in a task before ``asyncio.wait`` looks at anything. So the
messages delivered, their order and what a rebalance or a stop cuts short are faust's.
The first step runs in the loop's own task rather than in a task of its own (with a copy
of the context): the conductor's callback sets no context variable (faust sets its
current event and agent in the streams' and agents' tasks), so nothing sees the change.
:data:`FAUST_DRAIN_SHA256` pins the faust loop this copies (test_drain): a faust upgrade
that changes it fails that test until this file is read against it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

from faust.transport import consumer as faust_consumer
from mode import Service, ServiceT

# sha256 of inspect.getsource(faust's Consumer._drain_messages), faust-streaming 0.15.3
FAUST_DRAIN_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def faust_drain_sha256() -> str:
    """sha256 of the source of faust's own ``Consumer._drain_messages``."""
    source = inspect.getsource(_FAUST_DRAIN)
    return hashlib.sha256(source.encode()).hexdigest()


class _Rest:
    """The rest of a coroutine whose first step already ran (``yield from`` by hand):
    awaiting it passes what the coroutine yields to the task and the task's answers (a
    value, or an exception such as a cancellation) back into it."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro, self._pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - thrown in by the task: pass on
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def deliver(service: Any, coro: Coroutine[Any, Any, Any], flow: asyncio.Event) -> None:
    """Run ``coro`` (the conductor's callback for one message) as faust's
    ``service.wait_first(coro, flow.wait())`` would, without the tasks when it does not
    wait."""
    try:
        pending = coro.send(None)
    except StopIteration:
        return  # delivered without waiting
    await service.wait_first(_Rest(coro, pending), flow.wait())


async def _drain_messages(self: Any, fetcher: ServiceT) -> None:
    # faust-streaming's Consumer._drain_messages; only the hand-over differs (deliver).
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator[Any], getmany(timeout=1.0))

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        await deliver(self, callback(message), self.suspend_flow)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


_FAUST_DRAIN = faust_consumer.Consumer._drain_messages


def install() -> None:
    """Use :func:`_drain_messages` for every faust consumer of this process (idempotent)."""
    faust_consumer.Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
