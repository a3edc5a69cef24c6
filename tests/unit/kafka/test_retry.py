"""kafka_retry.retrying: transient Kafka errors are retried with a capped backoff until the
wait is spent, anything else fails at once; on a fake clock, with aiokafka's own errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    NotCoordinatorForGroupError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from streams.kafka.retry import MAX_DELAY_S, retrying, transient

log = logging.getLogger("test")


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(errors: list[Exception], result: str = "done") -> Callable[[], object]:
    calls = iter(errors)

    async def call() -> str:
        error = next(calls, None)
        if error is not None:
            raise error
        return result

    return call


def run(call: Callable[[], object], wait_s: float, time: FakeTime) -> object:
    return asyncio.run(retrying(call, "reading something", wait_s, log,  # type: ignore[arg-type]
                                sleep=time.sleep, clock=time.clock))


def test_what_counts_as_transient() -> None:
    assert transient(KafkaConnectionError("down"))
    assert transient(NodeNotReadyError("node 1"))
    assert transient(NotCoordinatorForGroupError())
    assert transient(KafkaTimeoutError())  # aiokafka says not retriable; a restart gives it
    assert not transient(TopicAuthorizationFailedError())
    assert not transient(ValueError("not Kafka's"))


def test_a_broker_restart_is_ridden_out(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    errors: list[Exception] = [KafkaConnectionError("down")] * 5 + [NodeNotReadyError("1")]
    with caplog.at_level(logging.WARNING):
        assert run(failing(errors), 60, time) == "done"
    assert time.slept == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]  # doubling, capped at MAX_DELAY_S
    assert max(time.slept) == MAX_DELAY_S
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6
    assert "reading something: NodeNotReadyError" in warnings[-1].getMessage()


def test_it_gives_up_once_the_next_retry_would_pass_the_wait(
        caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    with caplog.at_level(logging.WARNING), pytest.raises(KafkaConnectionError):
        run(failing([KafkaConnectionError("down")] * 100), 10, time)
    # 0.5 + 1 + 2 + 4 = 7.5 s slept; a fifth wait of 5 s would end at 12.5 > 10.
    assert time.slept == [0.5, 1.0, 2.0, 4.0]
    assert caplog.records[-1].levelno == logging.ERROR
    assert "giving up" in caplog.records[-1].getMessage()


def test_other_errors_fail_at_once() -> None:
    time = FakeTime()
    with pytest.raises(TopicAuthorizationFailedError):
        run(failing([TopicAuthorizationFailedError()]), 60, time)
    with pytest.raises(ValueError):
        run(failing([ValueError("a bug")]), 60, time)
    assert time.slept == []


def test_no_wait_means_no_retry(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    with caplog.at_level(logging.WARNING), pytest.raises(UnknownTopicOrPartitionError):
        run(failing([UnknownTopicOrPartitionError()]), 0, time)
    assert time.slept == [] and not caplog.records
