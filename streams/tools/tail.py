"""`ioacct tail TOPIC`: any of the project's topics, decoded into JSON lines."""

from __future__ import annotations

import asyncio
import base64
import sys
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer

from streams.config import Settings
from streams.core.codec import CodecError, SchemaSet, default_schemas
from streams.core.events import OPS, STATUSES
from streams.core.raw import RAW_RECORD_NAMES, RawLayoutError, raw_batch
from streams.kafka.security import client_kwargs
from streams.kafka.topics import topic_partitions


def _names(codes: bytes, names: tuple[str, ...]) -> list[Any]:
    return [names[c] if c < len(names) else c for c in codes]


def _unpacked(record: dict[str, Any]) -> dict[str, Any]:
    """An IoBatch2 record's packed columns as lists of integers (its layout's own check
    failing leaves them packed, base64, with the reason)."""
    try:
        raw = raw_batch("IoBatch2", record)
    except RawLayoutError as exc:
        return {**record, "layout_error": str(exc)}
    cols = raw.columns
    return {**record, "volume": cols.volume.tolist(), "op": bytes(cols.op.tolist()),
            "status": bytes(cols.status.tolist()), "offset": raw.offset.tolist(),
            "bytes": cols.nbytes.tolist(), "submit_ns": cols.submit_ns.tolist(),
            "complete_ns": cols.complete_ns.tolist()}


def jsonable(name: str | None, record: dict[str, Any]) -> dict[str, Any]:
    """A decoded record made JSON-friendly: op/status codes as names, packed columns as
    integers, other bytes base64."""
    if name == "IoBatch2":
        record = _unpacked(record)
    out: dict[str, Any] = {}
    for key, value in record.items():
        if name in RAW_RECORD_NAMES and key == "op" and isinstance(value, bytes):
            value = _names(value, OPS)
        elif name in RAW_RECORD_NAMES and key == "status" and isinstance(value, bytes):
            value = _names(value, STATUSES)
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        out[key] = value
    return out


def render(schemas: SchemaSet, msg: Any) -> dict[str, Any]:
    """One Kafka message as a JSON object: where it is, its key, its decoded value."""
    line: dict[str, Any] = {
        "topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
        "timestamp_ms": msg.timestamp,
        "key": msg.key.decode(errors="replace") if msg.key is not None else None,
    }
    if msg.value is None:
        line["value"] = None
        return line
    try:
        name, record = schemas.decode(msg.value)
        line["schema"] = name
        line["value"] = jsonable(name, record)
    except CodecError as exc:
        line["undecodable"] = str(exc)
        line["value_base64"] = base64.b64encode(msg.value).decode()
    return line


async def tail(
    settings: Settings, topic: str, from_beginning: bool, idle_exit_s: float | None,
    max_messages: int | None = None, out: TextIO = sys.stdout,
) -> int:
    """Print the topic's messages as JSON lines; returns how many were printed."""
    schemas = default_schemas()
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    printed = 0
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            raise SystemExit(f"ioacct tail: no topic {topic!r} on {settings.bootstrap_servers}")
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        while max_messages is None or printed < max_messages:
            timeout_ms = int(idle_exit_s * 1000) if idle_exit_s is not None else 1000
            batches = await consumer.getmany(timeout_ms=timeout_ms)
            if not batches and idle_exit_s is not None:
                break
            messages = [msg for batch in batches.values() for msg in batch]
            if max_messages is not None:
                messages = messages[: max_messages - printed]
            for msg in messages:
                out.write(orjson.dumps(render(schemas, msg)).decode() + "\n")
            printed += len(messages)
            out.flush()
    finally:
        await consumer.stop()
    return printed


def run_tail(settings: Settings, topic: str, from_beginning: bool, idle_exit_s: float | None,
             max_messages: int | None) -> int:
    try:
        return asyncio.run(tail(settings, topic, from_beginning, idle_exit_s, max_messages))
    except KeyboardInterrupt:
        return 0
