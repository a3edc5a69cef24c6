"""Riding out a broker that is restarting: retry a Kafka call that failed for a transient
reason (the broker unreachable, a node not ready, no coordinator or leader yet), with a
capped backoff, for at most ``wait_s``; anything else fails at once.

faust's own consumer and producer reconnect by themselves; this is for the worker's own
Kafka calls beside them (topic creation at start, the gap reader's committed offsets and
ranges). Without it a broker restart that coincided with one of them made the worker exit
(and a worker started while the broker was down exit at once), each a restart that loses
nothing (no commit) but costs a rebalance and a table restore."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError, KafkaTimeoutError

T = TypeVar("T")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 5.0


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is one a later attempt can get past: aiokafka's retriable errors,
    and its client-side timeout (not marked retriable, yet what a call to a broker that
    is down for a while ends in)."""
    return isinstance(exc, KafkaError) and (exc.retriable or isinstance(exc, KafkaTimeoutError))


async def retrying(call: Callable[[], Awaitable[T]], what: str, wait_s: float,
                   log: logging.Logger, *,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                   clock: Callable[[], float] = time.monotonic) -> T:
    """``await call()``, again after each transient failure until ``wait_s`` have passed
    since the first; then (or at a failure that is not transient) its exception. Each
    retry is logged as a WARNING naming ``what`` and the error."""
    first: float | None = None
    delay = FIRST_DELAY_S
    while True:
        try:
            return await call()
        except KafkaError as exc:
            if not transient(exc):
                raise
            now = clock()
            first = now if first is None else first
            if now + delay > first + wait_s:
                if wait_s > 0:
                    log.error("%s: still %s %.1f s after the first failure; giving up (the "
                              "next retry would pass %.0f s)", what, _named(exc),
                              now - first, wait_s)
                raise
            log.warning("%s: %s; retrying in %.1f s (for up to %.0f s)", what, _named(exc),
                        delay, wait_s)
            await sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)


def _named(exc: BaseException) -> str:
    """aiokafka's errors mostly name their class in their text already."""
    name, text = type(exc).__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}" if text else name
