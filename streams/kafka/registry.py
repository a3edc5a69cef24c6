"""The volume registry on Kafka: the compacted topic ``<prefix>.volumes.registry`` (key =
volume_id, value = Avro ``VolumeRegistration``), written by the operator's tools (only
the admin principal may: kafka/users.py) and read to its end by each reader.

The rule and the map are ``core.registry``; here only reading and writing the topic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.config import Settings
from streams.core.codec import SchemaSet, default_schemas
from streams.core.events import id_error
from streams.core.registry import Registration, RegistrySink, VolumeRegistry, register_error
from streams.kafka.security import client_kwargs
from streams.kafka.topics import ensure_topics, topic_partitions

log = logging.getLogger(__name__)
READ_TIMEOUT_MS = 500


class RegistryError(RuntimeError):
    """A registration that cannot be made; the message says why."""


def decode(schemas: SchemaSet, value: bytes | None) -> Registration | None:
    """A registry record, or None for a tombstone (nothing of ours writes one)."""
    if value is None:
        return None
    _, record = schemas.decode(value, expect="VolumeRegistration")
    return Registration.from_avro(record)


def apply_message(registry: RegistrySink, schemas: SchemaSet, offset: int,
                  value: bytes | None) -> None:
    """One record of the topic into ``registry``; an unreadable one is logged and left."""
    try:
        record = decode(schemas, value)
    except ValueError as exc:
        log.error("volume registry: offset %d unreadable, ignored: %s", offset, exc)
        return
    if record is not None:
        registry.apply(record)


def partition(settings: Settings) -> TopicPartition:
    return TopicPartition(settings.registry_topic, 0)


def consumer(settings: Settings) -> AIOKafkaConsumer:
    """A consumer of the registry of its own: no group, nothing committed."""
    return AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False,
                            group_id=None, fetch_max_wait_ms=100)


async def read_to(registry: RegistrySink, reader: AIOKafkaConsumer, tp: TopicPartition,
                  end: int, schemas: SchemaSet) -> None:
    """Read ``tp`` into ``registry`` until the reader's position reaches ``end``."""
    while await reader.position(tp) < end:
        batches = await reader.getmany(tp, timeout_ms=READ_TIMEOUT_MS)
        for message in batches.get(tp, []):
            apply_message(registry, schemas, message.offset, message.value)


async def read_registry(settings: Settings) -> VolumeRegistry:
    """The whole registry as of now (its end offset when this was called)."""
    registry = VolumeRegistry()
    tp = partition(settings)
    reader = consumer(settings)
    await reader.start()
    try:
        if not await topic_partitions(reader, tp.topic):
            return registry  # no registry topic yet: nothing registered
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]
        await read_to(registry, reader, tp, end, default_schemas())
    finally:
        await reader.stop()
    return registry


@dataclass
class RegisterReport:
    """What :func:`register_volumes` did: volumes registered now, registered already to
    the same tenant, and refused (registered to another tenant), with the reasons."""

    registered: list[Registration] = field(default_factory=list)
    unchanged: list[Registration] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"volumes registered: {len(self.registered)} new, {len(self.unchanged)} "
               "already registered to the same tenant"]
        if self.refused:
            out.append(f"  {len(self.refused)} refused (their events will be dead-lettered):")
            out += [f"    {reason}" for reason in self.refused[:10]]
        return out


async def register_volumes(settings: Settings, pairs: Iterable[tuple[str, str]],
                           registry: VolumeRegistry | None = None) -> RegisterReport:
    """Register each (volume, tenant) that is not yet registered; one that is registered
    to another tenant is refused (a volume never moves), to the same tenant left as it is.
    Every new registration is acknowledged by all in-sync replicas before this returns.
    ``registry``: a view read to the end beforehand (else read here), updated in place."""
    checked = pairs_checked(pairs)
    registry = registry if registry is not None else await read_registry(settings)
    report = RegisterReport()
    now_ns = time.time_ns()
    new: dict[str, Registration] = {}
    for volume_id, tenant_id in checked:
        current = new.get(volume_id) or registry.get(volume_id)
        reason = register_error(current, volume_id, tenant_id)
        if reason is not None:
            report.refused.append(reason)
        elif current is None:
            new[volume_id] = Registration(volume_id, tenant_id, now_ns, settings.kafka_user)
        elif volume_id not in new:
            report.unchanged.append(current)
    report.registered = list(new.values())
    await _write(settings, report.registered)
    for record in report.registered:
        registry.apply(record)
    return report


def pairs_checked(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` as a list, or a RegistryError naming the first bad id."""
    out = list(pairs)
    for volume_id, tenant_id in out:
        reason = id_error("volume_id", volume_id) or id_error("tenant_id", tenant_id)
        if reason is not None:
            raise RegistryError(reason)
    return out


async def _write(settings: Settings, records: list[Registration]) -> None:
    if not records:
        return
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        schemas = default_schemas()
        sent = [await producer.send(settings.registry_topic,
                                    schemas.encode("VolumeRegistration", r.to_avro()),
                                    key=r.volume_id.encode(), partition=0)
                for r in records]
        for future in sent:
            await future  # raises if the broker refused it (TopicAuthorizationFailed...)
    finally:
        await producer.stop()
