"""The token store: the compacted topic ``<prefix>.auth.tokens`` (key = token_id, value =
Avro ``AuthToken``), written by ``ioacct token`` and followed by every worker.

A topic rather than a file, so that every worker of the group, on any host, sees a token
created or revoked within a fraction of a second, without a restart, and a worker that
starts reads the whole store before it answers any request (docs/access.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.api.auth import TokenBook, TokenRecord, new_token, parse_token
from streams.config import Settings
from streams.core.codec import SchemaSet, default_schemas
from streams.kafka.security import client_kwargs

log = logging.getLogger(__name__)


class TokenStoreError(RuntimeError):
    """A token operation that cannot be done; the message says why."""


def _decode(schemas: SchemaSet, value: bytes | None) -> TokenRecord | None:
    if value is None:
        return None
    _, record = schemas.decode(value, expect="AuthToken")
    return TokenRecord.from_avro(record)


async def _put(settings: Settings, record: TokenRecord) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        value = default_schemas().encode("AuthToken", record.to_avro())
        await producer.send_and_wait(settings.tokens_topic, value, key=record.token_id.encode())
    finally:
        await producer.stop()


async def read_book(settings: Settings) -> TokenBook:
    """The whole store as of now."""
    book = TokenBook()
    feed = TokenFeed(settings, book)
    await feed.catch_up()
    return book


async def create(settings: Settings, role: str, tenant_id: str | None, label: str = ""
                 ) -> tuple[str, TokenRecord]:
    """A new token, stored; returns its text (shown once) and its record."""
    from streams.kafka.topics import ensure_topics

    text, record = new_token(role, tenant_id, time.time_ns(), label)
    await ensure_topics(settings)
    await _put(settings, record)
    return text, record


async def revoke(settings: Settings, token: str) -> TokenRecord:
    """Revoke a token named by its id or its whole text; final."""
    token_id = parse_token(token)[0] if token.startswith("ioa_") else token
    record = (await read_book(settings)).get(token_id)
    if record is None:
        raise TokenStoreError(f"no token {token_id!r} in {settings.tokens_topic}")
    if record.revoked_ns is not None:
        return record
    revoked = TokenRecord(**{**record.__dict__, "revoked_ns": time.time_ns()})
    await _put(settings, revoked)
    return revoked


class TokenFeed:
    """Follows the token store into a :class:`TokenBook`; ``ready`` once it has read
    everything that was in the store when it started."""

    def __init__(self, settings: Settings, book: TokenBook | None = None) -> None:
        self.settings = settings
        self.book = book if book is not None else TokenBook()
        self.ready = asyncio.Event()
        self.records_read = 0
        self.schemas = default_schemas()
        self._tp = TopicPartition(settings.tokens_topic, 0)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(**client_kwargs(self.settings),
                                enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=100)

    async def _read(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> None:
        batches = await consumer.getmany(self._tp, timeout_ms=timeout_ms)
        for message in batches.get(self._tp, []):
            try:
                record = _decode(self.schemas, message.value)
            except ValueError as exc:  # a record no worker can read: say so, keep going
                log.error("token store: offset %d unreadable, ignored: %s", message.offset, exc)
                continue
            self.records_read += 1
            if record is not None:
                self.book.apply(record)

    async def catch_up(self, consumer: AIOKafkaConsumer | None = None) -> None:
        """Read up to the end the store had when this was called."""
        own = consumer is None
        consumer = consumer or self._consumer()
        if own:
            await consumer.start()
        try:
            if own:
                consumer.assign([self._tp])
                await consumer.seek_to_beginning(self._tp)
            end = (await consumer.end_offsets([self._tp]))[self._tp]
            while await consumer.position(self._tp) < end:
                await self._read(consumer, 500)
            self.ready.set()
        finally:
            if own:
                await consumer.stop()

    async def run(self) -> None:
        """Catch up, then follow the store until cancelled."""
        consumer = self._consumer()
        await consumer.start()
        try:
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
            await self.catch_up(consumer)
            log.info("token store: %d token(s) known", len(self.book))
            while True:
                await self._read(consumer, 1000)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
