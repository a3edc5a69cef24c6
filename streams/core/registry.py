"""The volume registry: which tenant owns each volume, and the ownership rule.

Pure logic: no faust, no aiokafka. The registry is a compacted topic keyed by
volume_id (``VolumeRegistration`` records, written by the operator's tools only); the
map here is built from its records as compaction would leave them (the latest record
of a key wins). SEMANTICS.md section 1: an event of an unregistered volume, or one
that names another tenant, is rejected; with no registry deployed, the first tenant
seen with a volume owns it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

REGISTRY_REQUIRED = "required"
REGISTRY_OFF = "off"
REGISTRY_MODES = (REGISTRY_REQUIRED, REGISTRY_OFF)


def mode_error(mode: str) -> str | None:
    """Why ``mode`` is no IOACCT_VOLUME_REGISTRY value, or None."""
    if mode in REGISTRY_MODES:
        return None
    return f"IOACCT_VOLUME_REGISTRY={mode!r}: use one of {', '.join(REGISTRY_MODES)}"


class RegistryBehind(Exception):  # noqa: N818 (a signal to catch up, not a failure)
    """The registry view may miss a registration made before the record being judged:
    catch the view up (past the record's Kafka timestamp) and judge the record again.
    Raised by a registry lookup before any state is changed."""

    def __init__(self, volume_id: str) -> None:
        super().__init__(f"the volume registry may be behind for volume {volume_id}")
        self.volume_id = volume_id


@dataclass(frozen=True, slots=True)
class Registration:
    volume_id: str
    tenant_id: str
    registered_at_ns: int
    registered_by: str = ""

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Registration:
        return cls(record["volume_id"], record["tenant_id"], record["registered_at_ns"],
                   record.get("registered_by", ""))

    def to_avro(self) -> dict[str, Any]:
        return {"volume_id": self.volume_id, "tenant_id": self.tenant_id,
                "registered_at_ns": self.registered_at_ns, "registered_by": self.registered_by}


class VolumeRegistry:
    """volume_id -> its registration, the latest record of each volume winning."""

    def __init__(self, records: Iterable[Registration] = ()) -> None:
        self._by_volume: dict[str, Registration] = {}
        for record in records:
            self.apply(record)

    def apply(self, record: Registration) -> None:
        self._by_volume[record.volume_id] = record

    def get(self, volume_id: str) -> Registration | None:
        return self._by_volume.get(volume_id)

    def tenant_of(self, volume_id: str) -> str | None:
        """The registered tenant of ``volume_id``, or None (a lookup for ingest)."""
        record = self._by_volume.get(volume_id)
        return None if record is None else record.tenant_id

    def __len__(self) -> int:
        return len(self._by_volume)

    def __iter__(self) -> Iterator[Registration]:
        return iter(sorted(self._by_volume.values(), key=lambda r: r.volume_id))


class RegistrySink(Protocol):
    """What reading the registry topic fills: a :class:`VolumeRegistry` (the operator's
    tools) or a :class:`TenantIndex` (a worker)."""

    def apply(self, record: Registration) -> None: ...


class TenantIndex:
    """volume_id -> registered tenant, the latest record of each volume winning: all a
    worker judges records by. Every worker holds the whole fleet's, so it keeps no more:
    a volume's key and a dict slot, the tenant shared by all its volumes (about 100
    bytes a volume, against about 320 for a Registration each; docs/performance.md)."""

    def __init__(self, records: Iterable[Registration] = ()) -> None:
        self._tenants: dict[str, str] = {}
        for record in records:
            self.apply(record)

    def apply(self, record: Registration) -> None:
        # A fleet has few tenants: one string each, not one per volume.
        self._tenants[record.volume_id] = sys.intern(record.tenant_id)

    def tenant_of(self, volume_id: str) -> str | None:
        """The registered tenant of ``volume_id``, or None (a lookup for ingest)."""
        return self._tenants.get(volume_id)

    def __len__(self) -> int:
        return len(self._tenants)


def register_error(current: Registration | None, volume_id: str, tenant_id: str
                   ) -> str | None:
    """Why ``volume_id`` cannot be registered to ``tenant_id`` given its current
    registration, or None (new, or the same tenant again: nothing to change)."""
    if current is not None and current.tenant_id != tenant_id:
        return (f"volume {volume_id} is registered to tenant {current.tenant_id}; a volume "
                f"never moves to another tenant (its counters and bills are "
                f"{current.tenant_id}'s)")
    return None


def owner_error(volume_id: str, claimed_tenant: str, registered_tenant: str | None,
                registry_deployed: bool, known_tenant: str | None) -> str | None:
    """Why events of ``volume_id`` claiming ``claimed_tenant`` may not be counted, or None.

    ``known_tenant`` is the tenant of the volume's counters, if it has any. With a
    registry, the registration decides; counters kept for another tenant (from before
    the registry) are never continued for a new one. Without, the first tenant seen
    owns the volume.
    """
    if registry_deployed:
        if registered_tenant is None:
            return f"volume {volume_id} is not registered"
        if registered_tenant != claimed_tenant:
            return (f"volume {volume_id} is registered to tenant {registered_tenant}, "
                    f"not {claimed_tenant}")
    if known_tenant is not None and known_tenant != claimed_tenant:
        # Never bill one tenant's I/O to another.
        return f"volume {volume_id} belongs to tenant {known_tenant}, not {claimed_tenant}"
    return None
