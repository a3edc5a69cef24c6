"""faust's producer buffer must be empty when a commit follows its flush, and the other
fixes of faust_fixes.py.

No broker needed: the buffer hands messages to a channel whose publish is slow, as it
is on a busy worker; faust's own flush gives up after 0.1 s without progress.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

from streams.config import Settings
from streams.pipeline.app import build_app
from streams.pipeline.guard import faust_fixes


class SlowChannel:
    """Takes ``delay_s`` to accept each message, and remembers what it accepted."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.published: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(self.delay_s)
        self.published.append(fut.n)


async def _flush_with(flush: Any, n: int, delay_s: float) -> tuple[list[int], int]:
    """Put ``n`` messages, flush with ``flush``; (accepted at return, still buffered)."""
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    channel = SlowChannel(delay_s)
    await buffer.start()
    try:
        for i in range(n):
            buffer.put(SimpleNamespace(n=i, message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]
        await flush(buffer)
        return list(channel.published), buffer.size
    finally:
        while buffer.size or len(channel.published) < n:  # let it finish before stopping
            await asyncio.sleep(0.05)
        await buffer.stop()


def test_faust_flush_alone_returns_with_messages_still_buffered() -> None:
    # Why the fix exists: if faust ever fixes this, this test says the fix can go.
    published, left = asyncio.run(_flush_with(faust_fixes._original_flush, 5, 0.15))
    assert left > 0 and len(published) < 5


def test_fixed_flush_returns_only_when_every_message_was_handed_over() -> None:
    faust_fixes.apply()
    published, left = asyncio.run(_flush_with(ProducerBuffer.flush, 5, 0.15))
    assert (published, left) == ([0, 1, 2, 3, 4], 0)


def test_fixed_flush_waits_for_the_message_in_flight() -> None:
    faust_fixes.apply()
    # One message: the queue is empty at once, the message is in flight for 0.3 s.
    published, left = asyncio.run(_flush_with(ProducerBuffer.flush, 1, 0.3))
    assert (published, left) == ([0], 0)


class Delivered(SimpleNamespace):
    """A message as faust's consumer.ack() sees it (hashable and weak-referenceable,
    unlike its base)."""

    __hash__ = object.__hash__


def test_a_gap_at_the_head_stops_faust_committing_unless_the_offsets_read_are_acked() -> None:
    """faust delivered 1692 first, the group had committed 1686: the agent read
    1686..1691 directly (gap_reader.py). Faust alone would never commit again."""
    import faust
    from faust.types import TP

    def consumer() -> Any:
        app = faust.App("ioacct-test-acks", broker="kafka://127.0.0.1:1")
        c = app.consumer
        app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
        c._committed_offset[TP("raw", 3)] = 1686
        c.ack(Delivered(acked=False, tp=TP("raw", 3), offset=1692, topic="raw"))
        return c

    faust_alone = consumer()
    assert list(faust_alone._acked[TP("raw", 3)]) == [1692]  # faust's own ack took it
    assert faust_alone._new_offset(TP("raw", 3)) is None  # stuck: the bug
    assert faust_alone._new_offset(TP("raw", 3)) is None
    fixed = consumer()
    faust_fixes.ack_offsets(fixed, TP("raw", 3), list(range(1686, 1692)))
    assert fixed._new_offset(TP("raw", 3)) == 1693  # everything up to 1692 is committed
    faust_fixes.ack_offsets(fixed, TP("raw", 3), [1690])  # below the commit: ignored
    assert fixed._new_offset(TP("raw", 3)) is None


def _commits(consumer: Any, tp: Any, rounds: int) -> list[int | None]:
    """What faust's commit loop would commit, round after round (every 2.8 s)."""
    made = []
    for _ in range(rounds):
        offset = consumer._new_offset(tp)
        made.append(offset)
        if offset is not None:
            consumer._committed_offset[tp] = offset
    return made


def test_faust_gap_bookkeeping_makes_the_commit_crawl_one_offset_a_round() -> None:
    """Seen in chaos runs: the group had committed 72, faust delivered 82 first (and
    noted 73..82 as a gap, its read offset being 72); the agent read 72..81 directly.
    With faust's gap, each offset is acknowledged twice and the commit moved by one
    offset per commit interval; without it, past the whole range at once."""
    import faust
    from faust.transport.consumer import Consumer
    from faust.types import TP

    def commits(add_gap: Any) -> list[int | None]:
        app = faust.App("ioacct-test-gap", broker="kafka://127.0.0.1:1")
        c = app.consumer
        app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
        tp = TP("raw", 2)
        c._committed_offset[tp] = 72
        asyncio.run(add_gap(c, tp, 73, 82))  # what Consumer._drain_messages does
        faust_fixes.ack_offsets(c, tp, range(72, 82))  # the agent read those itself
        c.ack(Delivered(acked=False, tp=tp, offset=82, topic="raw"))
        return _commits(c, tp, 4)

    assert commits(faust_fixes._original_add_gap) == [74, 75, 76, 77]  # faust's: a crawl
    faust_fixes.apply()
    assert Consumer._add_gap is faust_fixes._add_gap
    assert commits(Consumer._add_gap) == [83, None, None, None]


def test_holes_of_a_compacted_topic_are_acknowledged_with_the_records_read() -> None:
    """stats.1s, compacted: committed 10, faust delivered 15; the range read directly
    held only 10, 13 and 14. The commit must still pass 11 and 12."""
    import faust
    from faust.types import TP

    faust_fixes.apply()
    app = faust.App("ioacct-test-holes", broker="kafka://127.0.0.1:1")
    c = app.consumer
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    tp = TP("stats", 0)
    c._committed_offset[tp] = 10
    faust_fixes.ack_offsets(c, tp, [10, 13, 14])  # the records alone: stuck at 11
    assert _commits(c, tp, 2) == [11, None]
    faust_fixes.ack_offsets(c, tp, range(10, 15))  # the whole range, as app.py does
    c.ack(Delivered(acked=False, tp=tp, offset=15, topic="stats"))
    assert _commits(c, tp, 2) == [16, None]


def test_a_held_commit_is_reported_with_what_faust_holds() -> None:
    """The head gap above, unfixed, seen by the worker's commit watch on faust's own
    consumer: nothing for a minute, then one line naming the partition and the gap."""
    import faust
    from faust.types import TP

    from streams.pipeline.guard.offsets import CommitWatch

    app = faust.App("ioacct-test-watch", broker="kafka://127.0.0.1:1")
    c = app.consumer
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    held, moving = TP("raw", 3), TP("raw", 4)
    c.assignment = lambda: {held, moving, TP("other", 0)}  # type: ignore[method-assign]
    c._committed_offset[held] = 1686
    c.ack(Delivered(acked=False, tp=held, offset=1692, topic="raw"))
    watch = CommitWatch(stall_s=60)
    ours = {"raw": {3: 1693, 4: 10}}
    assert faust_fixes.held_commits(c, ours, watch, now=0) == []
    c._committed_offset[moving] = 5  # partition 4 commits every time: never reported
    c.ack(Delivered(acked=False, tp=moving, offset=9, topic="raw"))
    for now, committed in ((30, 6), (60, 7), (61, 8)):
        assert c._new_offset(held) is None  # faust's commit loop gets nowhere
        c._committed_offset[moving] = committed
        lines = faust_fixes.held_commits(c, ours, watch, now=now)
        assert lines == ([] if now != 60 else [  # said once a minute, not every tick
            "raw[3]: commit held at 1686 for 60 s while 1 processed record(s) wait past it "
            "(offsets 1692..1692, 1 distinct); next offset by ioacct 1693"])


def test_the_worker_keeps_the_root_logger_at_its_level() -> None:
    """faust's own worker, at WARNING, adds a spinner handler at DEBUG and sets the logger
    to DEBUG: every debug call in faust and aiokafka then builds a record (the bench's
    profile: 7 %). Ours leaves the level and the handlers as they were."""
    import logging

    import faust

    from streams.worker import Worker

    asyncio.set_event_loop(asyncio.new_event_loop())
    app = faust.App("logging-test", broker="kafka://127.0.0.1:1", store="memory://",
                    autodiscover=False)
    loggers = []
    for worker_class in (faust.Worker, Worker):
        logger = logging.Logger(worker_class.__module__)
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.WARNING)
        worker_class(app, loglevel="warning", quiet=True).on_setup_root_logger(
            logger, logging.WARNING)
        loggers.append(logger)
    assert loggers[0].level == logging.DEBUG and len(loggers[0].handlers) == 2  # faust's
    assert loggers[1].level == logging.WARNING and len(loggers[1].handlers) == 1
    assert not loggers[1].isEnabledFor(logging.DEBUG)


def test_the_worker_consumer_fetches_with_a_short_broker_wait(tmp_path: Path) -> None:
    # faust builds it with 1,500 ms: a fetch of idle partitions held that long holds the
    # records arriving on the others with it (faust_fixes.py, docs/performance.md).
    app = build_app(Settings(state_dir=tmp_path, kafka_security="PLAINTEXT")).app
    thread = app.consumer._thread
    assert isinstance(thread, AIOKafkaConsumerThread)

    async def made() -> Any:
        return thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(made())
    assert consumer._fetch_max_wait_ms == faust_fixes.FETCH_MAX_WAIT_MS == 100
    assert faust_fixes._original_create_worker_consumer is not (
        AIOKafkaConsumerThread._create_worker_consumer)
