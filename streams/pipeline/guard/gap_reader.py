"""Reads ranges of an input topic directly, for the records faust skipped (offsets.py).

A consumer of its own, with no group: it only fetches what it is asked for, and the
accounting agent processes those records in order, inside its stream, before the
record faust delivered. Also tells where a newly assigned partition must start: the
group's committed offset, or the partition's first offset when nothing is committed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.config import Settings
from streams.kafka.retry import retrying
from streams.kafka.security import client_kwargs

log = logging.getLogger(__name__)


class GapReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            consumer = AIOKafkaConsumer(**client_kwargs(self.settings),
                                        enable_auto_commit=False, group_id=None,
                                        auto_offset_reset="earliest")
            admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
            try:
                await consumer.start()
                await admin.start()
            except BaseException:
                await consumer.stop()  # both are safe to stop when they did not start
                await admin.close()
                raise
            self._consumer, self._admin = consumer, admin
        return self._consumer, self._admin

    async def committed_or_first(self, partition: int, topic: str | None = None) -> int:
        tp = TopicPartition(topic or self.settings.raw_topic, partition)
        async with self._lock:
            return await retrying(lambda: self._committed_or_first(tp),
                                  f"reading the committed offset of {tp.topic}[{partition}]",
                                  self.settings.kafka_wait_s, log)

    async def _committed_or_first(self, tp: TopicPartition) -> int:
        consumer, admin = await self._clients()
        committed = await admin.list_consumer_group_offsets(self.settings.app_id,
                                                            partitions=[tp])
        if tp in committed and committed[tp].offset >= 0:
            return int(committed[tp].offset)
        return int((await consumer.beginning_offsets([tp]))[tp])

    async def read(self, partition: int, start: int, end: int, topic: str | None = None
                   ) -> list[Any]:
        """The records at offsets [start, end) of one partition (of the raw topic by
        default), in order; a compacted topic's range may hold fewer."""
        tp = TopicPartition(topic or self.settings.raw_topic, partition)
        async with self._lock:  # one consumer, shared by the agents: one range at a time
            return await retrying(lambda: self._read(tp, start, end),
                                  f"reading {tp.topic}[{partition}]@{start}..{end - 1}",
                                  self.settings.kafka_wait_s, log)

    async def _read(self, tp: TopicPartition, start: int, end: int) -> list[Any]:
        consumer, _ = await self._clients()
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[Any] = []
        while not records or records[-1].offset < end - 1:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            records += [r for r in batch.get(tp, []) if start <= r.offset < end]
            if await consumer.position(tp) >= end:
                break
        return records

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
