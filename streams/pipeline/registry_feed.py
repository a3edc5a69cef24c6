"""The worker's view of the volume registry (IOACCT_VOLUME_REGISTRY=required).

A task of the faust app reads the registry topic from the beginning with a consumer of
its own (no group) and follows it. The accounting agent judges a volume against this
view; a volume the view does not know may have been registered just before its first
events while the view lagged, so before it is rejected the view is caught up to the
registry's end offsets as fetched after the record's Kafka timestamp (the broker's
append time). ``fresh_ns`` remembers the last such fetch, so a flood of unregistered
volumes costs one round trip per fetch, not one per record. If the registry cannot be
read, the agent waits: a record is never rejected because of our own lag.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.registry import RegistryBehind, TenantIndex
from streams.kafka import registry as topic

log = logging.getLogger(__name__)
FOLLOW_INTERVAL_S = 1.0  # how often the view reads what was registered since
RETRY_S = 1.0  # after the registry could not be read
MAX_CLOCK_WAIT_S = 1.0  # one wait for our clock to pass a record's timestamp
# Kafka timestamps are milliseconds: a record stamped T was appended before T + 1 ms.
TIMESTAMP_RESOLUTION_NS = 1_000_000


class RegistryFeed:
    """The registry read so far (``registry``) and how fresh it is (``fresh_ns``: the
    wall clock just before fetching the end offsets it has read up to)."""

    def __init__(self, settings: Settings, clock: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.registry = TenantIndex()
        self.fresh_ns = 0
        self.catch_ups = 0  # end-offset round trips made for the accounting agent
        self.started = asyncio.Event()
        self._clock = clock
        self._tp = topic.partition(settings)
        self._reader: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._schemas = default_schemas()

    def lookup_for(self, record_ns: int) -> Callable[[str], str | None]:
        """The lookup ``account_record`` takes for a record appended at ``record_ns``:
        a volume's registered tenant, None when the view is fresh enough to say it has
        none, else :class:`RegistryBehind` (catch up, then judge again)."""

        appended_by_ns = record_ns + TIMESTAMP_RESOLUTION_NS

        def registered(volume_id: str) -> str | None:
            tenant = self.registry.tenant_of(volume_id)
            if tenant is None and self.fresh_ns <= appended_by_ns:
                raise RegistryBehind(volume_id)
            return tenant

        return registered

    async def catch_up(self, record_ns: int) -> None:
        """Read the registry up to its end offsets as fetched after ``record_ns``; retried
        (logged) for as long as the registry cannot be read."""
        appended_by_ns = record_ns + TIMESTAMP_RESOLUTION_NS
        await self.started.wait()
        async with self._lock:
            while self.fresh_ns <= appended_by_ns:
                ahead_s = (appended_by_ns - self._clock()) / 1e9
                if ahead_s >= 0:  # the broker's clock ahead of ours: wait for ours to pass
                    await asyncio.sleep(min(ahead_s + 0.001, MAX_CLOCK_WAIT_S))
                    continue
                if await self._refresh():
                    self.catch_ups += 1
                else:
                    await asyncio.sleep(RETRY_S)

    async def _refresh(self) -> bool:
        """One fetch of the end offsets and a read up to them; False if Kafka failed."""
        assert self._reader is not None
        fetched_ns = self._clock()
        try:
            end = (await self._reader.end_offsets([self._tp]))[self._tp]
            await topic.read_to(self.registry, self._reader, self._tp, end, self._schemas)
        except KafkaError as exc:
            log.warning("volume registry %s unreadable (records of unknown volumes wait): %s",
                        self._tp.topic, exc)
            return False
        self.fresh_ns = max(self.fresh_ns, fetched_ns)
        return True

    async def _start(self) -> None:
        while True:
            reader = topic.consumer(self.settings)
            try:
                await reader.start()
                reader.assign([self._tp])
                await reader.seek_to_beginning(self._tp)
            except KafkaError as exc:
                log.warning("volume registry: cannot connect yet: %s", exc)
                await reader.stop()
                await asyncio.sleep(RETRY_S)
                continue
            self._reader = reader
            return

    async def run(self) -> None:
        """Read the registry from the beginning, then follow it until cancelled."""
        await self._start()
        self.started.set()
        try:
            async with self._lock:
                await self._refresh()
            log.info("volume registry: %d volume(s) registered", len(self.registry))
            while True:
                async with self._lock:
                    await self._refresh()
                await asyncio.sleep(FOLLOW_INTERVAL_S)
        finally:
            assert self._reader is not None
            await self._reader.stop()
