"""The aiokafka producer's sharp edges, handled in one place: waiting for an
acknowledgement with a bound, and stopping a client without hanging while Kafka is away."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

log = logging.getLogger("streams.sdk.producer")
ACK_TIMEOUT_S = 15.0  # no acknowledgement for this long: reconnect and resend


async def acknowledged(future: asyncio.Future[Any]) -> None:
    """Wait for Kafka's acknowledgement; raise the send's error, or TimeoutError."""
    await asyncio.wait_for(asyncio.shield(future), ACK_TIMEOUT_S)


async def stop_kafka(kafka: AIOKafkaProducer, wait_s: float) -> None:
    """Stop an aiokafka producer without hanging on batches Kafka will not take now."""
    stopping = asyncio.ensure_future(kafka.stop())
    done, _ = await asyncio.wait({stopping}, timeout=wait_s)
    if not done:
        # aiokafka's stop() waits for every pending batch, forever while Kafka is away;
        # its sender task ends that wait. (Private attribute: aiokafka 0.11 to 0.14.)
        sender_task = getattr(getattr(kafka, "_sender", None), "sender_task", None)
        if sender_task is not None:
            sender_task.cancel()
        done, _ = await asyncio.wait({stopping}, timeout=wait_s)
    if not done:
        stopping.cancel()
    try:
        await stopping
    except (asyncio.CancelledError, KafkaError, OSError) as exc:
        log.debug("stopping the Kafka client: %s", describe(exc))


def describe(exc: BaseException) -> str:
    """An error as one readable phrase: its type name, then its text if any."""
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


async def partition_count(kafka: AIOKafkaProducer, topic: str, wait_s: float) -> int | None:
    """The topic's partition count from its metadata, or None (logged) when Kafka does
    not tell within ``wait_s``."""
    try:
        found = await asyncio.wait_for(kafka.partitions_for(topic), wait_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("no partition count for %s yet (%s): one volume per record until "
                    "there is", topic, describe(exc))
        return None
    return len(found) if found else None
